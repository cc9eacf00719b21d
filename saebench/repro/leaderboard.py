"""``results/leaderboard.md`` and its figures, built from the run records alone.

Sections: per reproduction and tier, reported vs regenerated for every claim with its status (a tier that
could not run here shows ``not run: needs ...``); one table of every SAE trained, across papers; and an
FVU-vs-L0 Pareto plot per tier under ``results/figures/``. Nothing but record contents goes in (no clock,
no environment), rows are sorted and numbers formatted one way, so unchanged records rebuild the same bytes.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from tabulate import tabulate

from saebench.repro.compare import comparison_table, format_number
from saebench.repro.records import read_records
from saebench.repro.tiers import TIERS
from saebench.viz.pareto import plot_pareto

__all__ = ["SAE_COLUMNS", "build_leaderboard", "render_leaderboard", "sae_rows"]

# (column header, metric key, scale): the cross-paper SAE table; see saebench.repro.pipeline for the names.
SAE_COLUMNS: tuple[tuple[str, str, float], ...] = (
    ("FVU", "fvu_dataset", 1.0),
    ("cosine", "cosine_similarity_mean", 1.0),
    ("L0", "l0", 1.0),
    ("dead %", "dead_fraction", 100.0),
    ("MCC", "mcc", 1.0),
    ("probe", "probe_accuracy", 1.0),
)
_DESCRIPTIVE_FIELDS = ("sae", "backbone")


def _record_heading(record: dict[str, Any]) -> str:
    seed = f" · seed {record['seed']}" if record["seed"] != 0 else ""
    return f"### {record['paper']} · {record['tier']}{seed}"


def _provenance(record: dict[str, Any]) -> str:
    v, s = record["versions"], record["summary"]
    counts = ", ".join(f"{s[k]} {k}" for k in ("pass", "fail", "error", "skipped"))
    return (
        f"seed {record['seed']} · config `{record['config_hash']}` · saebench {v['saebench']} "
        f"(`{v['git_sha'][:12]}`) · torch {v['torch']} · {record['device']} · {counts}"
    )


def _claims_section(records: list[dict[str, Any]]) -> list[str]:
    lines = ["## Claims: reported vs regenerated", ""]
    if not records:
        return lines + ["No run records yet: run `saebench reproduce all --tier toy`.", ""]
    for record in records:
        lines += [_record_heading(record), "", _provenance(record), ""]
        if record["status"] == "skipped":
            lines += ["not run: needs " + "; ".join(record["missing"]), ""]
        if record["claims"]:
            lines += [
                comparison_table(record["claims"], not_run=record["status"] == "skipped", with_source=True),
                "",
            ]
        else:
            lines += ["(no claims at this tier)", ""]
    return lines


def sae_rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per run that names its ``sae`` field, from records of tiers that ran, in sorted order."""
    rows = []
    for record in records:
        if record["status"] != "ran":
            continue
        for run in record["runs"]:
            fields = run["fields"]
            if "sae" not in fields:
                continue
            settings = ", ".join(f"{k}={fields[k]}" for k in sorted(fields) if k not in _DESCRIPTIVE_FIELDS)
            rows.append(
                {
                    "paper": record["paper"],
                    "tier": record["tier"],
                    "seed": record["seed"],
                    "sae": str(fields["sae"]),
                    "backbone": str(fields.get("backbone", "-")),
                    "settings": settings,
                    "metrics": run["metrics"],
                }
            )
    return sorted(
        rows,
        key=lambda r: (r["paper"], TIERS.index(r["tier"]), r["seed"], r["sae"], r["backbone"], r["settings"]),
    )


def _scaled(value: Any, scale: float) -> str:
    if value is None:
        return "-"
    return format_number(value * scale if isinstance(value, (int, float)) else value)


def _sae_section(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["## Every SAE trained", ""]
    if not rows:
        return lines + ["No record holds an SAE run yet.", ""]
    headers = ["paper", "tier", "architecture", "backbone", "settings"] + [h for h, _, _ in SAE_COLUMNS]
    table = [
        [
            r["paper"],
            r["tier"] + (f" (seed {r['seed']})" if r["seed"] != 0 else ""),
            r["sae"],
            r["backbone"],
            r["settings"] or "-",
        ]
        + [_scaled(r["metrics"].get(key), scale) for _, key, scale in SAE_COLUMNS]
        for r in rows
    ]
    return lines + [tabulate(table, headers=headers, tablefmt="github", disable_numparse=True), ""]


def _pareto_series(rows: list[dict[str, Any]]) -> dict[str, dict[str, list[tuple[float, float]]]]:
    """tier -> series name (``paper: sae``) -> (L0, FVU) points, from rows with finite numeric values."""
    by_tier: dict[str, dict[str, list[tuple[float, float]]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        l0, fvu = r["metrics"].get("l0"), r["metrics"].get("fvu_dataset")
        if isinstance(l0, (int, float)) and isinstance(fvu, (int, float)):
            by_tier[r["tier"]][f"{r['paper']}: {r['sae']}"].append((float(l0), float(fvu)))
    return {tier: dict(series) for tier, series in by_tier.items()}


def render_leaderboard(records: list[dict[str, Any]], figures: dict[str, str]) -> str:
    """The markdown text; ``figures`` maps tier -> PNG path relative to the leaderboard file."""
    lines = [
        "# saebench leaderboard",
        "",
        "Built by `saebench leaderboard` from the run records in `runs/` alone; do not edit by hand.",
        "`saebench reproduce all --tier toy` regenerates the toy tier. Statuses: pass, FAIL (the regenerated",
        "number disagrees with the claim), ERROR (the claim could not be evaluated), not run: needs ... .",
        "",
    ]
    lines += _claims_section(records)
    lines += _sae_section(sae_rows(records))
    lines += ["## FVU vs L0", ""]
    if not figures:
        lines += ["No record holds a run with both `fvu_dataset` and `l0` yet.", ""]
    for tier, png in figures.items():
        lines += [f"![FVU vs L0, {tier} tier]({png})", ""]
    return "\n".join(lines).rstrip("\n") + "\n"


def build_leaderboard(results_dir: str | Path = "results") -> Path:
    """Read ``<results>/runs/*.json``, write ``<results>/leaderboard.md`` and
    ``<results>/figures/pareto_fvu_l0_<tier>.png``; return the markdown path."""
    results_dir = Path(results_dir)
    records = read_records(results_dir)
    figures = {}
    series_by_tier = _pareto_series(sae_rows(records))
    for tier in [t for t in TIERS if t in series_by_tier]:
        series = series_by_tier[tier]
        name = f"pareto_fvu_l0_{tier}.png"
        plot_pareto(
            series,
            results_dir / "figures" / name,
            xlabel="L0 (active latents per sample)",
            ylabel="FVU (fvu_dataset)",
            title=f"FVU vs L0 — {tier} tier",
        )
        figures[tier] = f"figures/{name}"
    path = results_dir / "leaderboard.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_leaderboard(records, figures))
    return path
