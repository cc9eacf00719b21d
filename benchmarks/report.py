"""``results/bench/README.md``: the benchmark results as markdown tables, with the machine described."""

from __future__ import annotations

import datetime
from pathlib import Path

from tabulate import tabulate

MIB = 2**20


def _machine(machine: dict) -> str:
    load = machine.get("load_average_1min")
    load_end = machine.get("load_average_1min_end")
    load_text = (
        ""
        if load is None
        else f"; 1-minute load average {load:.1f} at the start"
        + ("" if load_end is None else f", {load_end:.1f} at the end")
    )
    return (
        f"Machine: {machine['device_name']} (device `{machine['device']}`), CPU {machine['cpu']} with "
        f"{machine['cpu_count']} cores ({machine.get('cpu_capability', '?')}), "
        f"{machine['torch_threads']} torch threads, torch {machine['torch']}, Python {machine['python']}, "
        f"saebench {machine['saebench']}"
        f"{load_text}."
    )


def _load(setting: dict) -> str:
    """`` (load a→b)``: the 1-minute load average before and after a setting was measured, when recorded."""
    load = setting.get("load_average_1min")
    if not load or None in load:
        return ""
    return f" (load {load[0]:.1f}→{load[1]:.1f})"


def _train_section(train: dict) -> list[str]:
    grid = train["grid"]
    rows = []
    for s in train["settings"]:
        for name, r in s["results"].items():
            rows.append(
                (
                    s["expansion"],
                    s["k"],
                    name,
                    f"{r['samples_per_second']:,.0f}",
                    f"{r['fraction_of_roofline']:.2f}",
                    f"{r['fraction_of_encoder_forward_bound']:.2f}",
                    f"{r['peak_memory_bytes'] / MIB:,.0f}",
                    f"{r['saved_for_backward_bytes'] / MIB:,.0f}",
                    "x".join(str(n) for n in r["largest_saved_for_backward_shape"]),
                )
            )
    headers = (
        "expansion",
        "k",
        "implementation",
        "samples/s",
        "of roofline",
        "of enc.-fwd bound",
        "peak MiB",
        "saved for bwd MiB",
        "largest saved",
    )
    method = train["settings"][0]["results"]["saebench-sparse"]["peak_memory_method"]
    rates = ", ".join(
        f"x{s['expansion']} k={s['k']}: {s['matmul_flops_per_second'] / 1e9:.0f}{_load(s)}"
        for s in train["settings"]
    )
    lines = [
        f"## Training: TopK SAE, d={grid['d']}, batch {grid['batch']}, float32",
        "",
        f"Median of {grid['rounds']} rounds of {grid['steps']} step(s), implementations interleaved. "
        "Roofline: `matmul rate / (4·d·h + 6·k·d)` samples/s (encoder forward and weight gradient, sparse "
        "decoder); encoder-forward bound: `matmul rate / (2·d·h + 8·k·d)` (all but the encoder forward "
        f"sparse). Matmul rate of the encoder's product, GFLOP/s: {rates}. Peak memory: "
        f"{method}, one step after warm-up, above the memory before it.",
        "",
        tabulate(rows, headers=headers, tablefmt="github"),
        "",
    ]
    targets = train["targets"]
    if "headline" in targets:
        t = targets["headline"]
        lines.append(
            f"- Target at x{t['setting']['expansion']}, k={t['setting']['k']}: sparse / overcomplete = "
            f"**{t['sparse_over_overcomplete']:.2f}x** "
            f"(target >= {t['target_sparse_over_overcomplete']:.0f}x); "
            f"sparse path at **{t['sparse_fraction_of_roofline']:.0%}** of the roofline (target >= "
            f"{t['target_fraction_of_roofline']:.0%}): {'met' if t['met'] else 'NOT met'}."
        )
    m = targets["memory"]
    largest = m["largest_saved_for_backward_shape"]
    shapes = ", ".join(f"{name} {'x'.join(map(str, shape))}" for name, shape in largest.items())
    lines += [
        f"- Memory at x{m['setting']['expansion']}, k={m['setting']['k']}, batch {m['setting']['batch']}: "
        f"largest tensor saved for the backward: {shapes}; {m['rule']}: {'met' if m['met'] else 'NOT met'}.",
        "",
    ]
    return lines


def _eval_section(evaluation: dict) -> list[str]:
    s = evaluation["setting"]
    rows = [(name, f"{r['rows_per_second_median']:,.0f}") for name, r in evaluation["results"].items()]
    return [
        f"## Evaluation: TopK SAE, d={s['d']}, expansion {s['expansion']}, k={s['k']}, "
        f"{s['rows_per_pass']:,} rows in batches of {s['batch']}",
        "",
        tabulate(rows, headers=("evaluation", "rows/s"), tablefmt="github"),
        "",
    ]


def _scalars(payload: dict, prefix: str = "") -> list[tuple[str, object]]:
    """Every number and string of a payload (nested dicts flattened with dots), the machine left out."""
    out = []
    for key, value in sorted(payload.items()):
        if key == "machine":
            continue
        if isinstance(value, dict):
            out += _scalars(value, f"{prefix}{key}.")
        elif isinstance(value, (int, float, str, bool)):
            out.append((f"{prefix}{key}", f"{value:,.4g}" if isinstance(value, float) else value))
    return out


def _generic_section(name: str, payload: dict) -> list[str]:
    return [f"## {name}", "", tabulate(_scalars(payload), headers=("field", "value"), tablefmt="github"), ""]


def write_readme(path: Path, results: dict[str, dict], failures: dict[str, str], command: str) -> Path:
    """Write the README from the results of this run (``{benchmark name: payload}``) and its failures."""
    machine = next((r["machine"] for r in results.values() if "machine" in r), None)
    lines = [
        "# Benchmarks",
        "",
        f"Generated by `{command}` on {datetime.date.today().isoformat()} from the JSON files beside this "
        "one (every number, and the machine and load average of the run that wrote each). How to read them: "
        "`docs/performance.md`.",
        "",
    ]
    if "--quick" in command:
        lines += ["A smoke run: its sizes are too small for the numbers to measure performance.", ""]
    if machine is not None:
        lines += [_machine(machine), ""]
    for name, payload in results.items():
        if name == "train":
            lines += _train_section(payload)
        elif name == "eval":
            lines += _eval_section(payload)
        elif name == "full_tier_estimates":
            lines += _generic_section("Full-tier wall-time estimates (GPU)", payload | {"formulas": ""})
        else:
            lines += _generic_section(f"`{name}`", payload)
    for name, error in failures.items():
        lines += [f"## `{name}`: failed", "", "```", error.strip(), "```", ""]
    path.write_text("\n".join(lines))
    return path
