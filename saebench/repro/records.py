"""Run records: one JSON file per reproduction, tier and seed under ``results/runs/``.

A record holds everything the leaderboard shows — so the leaderboard is built from records alone — plus
provenance: the config as written and its hash, the seed, the saebench version and git sha, the torch
version, the device and the wall time. Keys are sorted and floats are plain JSON numbers (non-finite values
are stored as the strings ``"nan"``, ``"inf"``, ``"-inf"``), so the same content always gives the same bytes.

Schema (``schema_version`` 1)::

    schema_version, paper, tier, seed, status ("ran" | "skipped"), missing (what a skipped tier needs),
    config, config_hash, versions {saebench, git_sha, torch, python}, device, wall_time_s,
    runs [{fields, metrics}], checks {name: {passed, detail}}, claims [ClaimOutcome as a dict],
    summary {pass, fail, error, skipped}
"""

from __future__ import annotations

import hashlib
import json
import math
import platform
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from saebench.repro.compare import STATUSES, ClaimOutcome
from saebench.repro.pipeline import PipelineResult
from saebench.repro.tiers import TIERS

__all__ = [
    "SCHEMA_VERSION",
    "RECORD_KEYS",
    "RecordError",
    "config_hash",
    "versions",
    "default_device",
    "build_record",
    "record_path",
    "write_record",
    "read_record",
    "read_records",
    "dump_json",
]

SCHEMA_VERSION = 1
RECORD_KEYS: frozenset[str] = frozenset(
    {
        "schema_version",
        "paper",
        "tier",
        "seed",
        "status",
        "missing",
        "config",
        "config_hash",
        "versions",
        "device",
        "wall_time_s",
        "runs",
        "checks",
        "claims",
        "summary",
    }
)
DEFAULT_SEED = 0


class RecordError(ValueError):
    """A run record that is not valid JSON or does not follow the schema."""


def _jsonable(value: Any) -> Any:
    """Recursively replace non-finite floats by strings so the JSON stays strict."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def dump_json(data: Any) -> str:
    """Deterministic JSON: sorted keys, two-space indent, strict numbers, trailing newline."""
    return json.dumps(_jsonable(data), sort_keys=True, indent=2, allow_nan=False, ensure_ascii=False) + "\n"


def config_hash(config: dict[str, Any]) -> str:
    """First 16 hex digits of the SHA-256 of the config's canonical JSON (sorted keys, no whitespace)."""
    canonical = json.dumps(_jsonable(config), sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _git_sha() -> str:
    """HEAD of the checkout holding saebench, ``-dirty`` if tracked files changed; ``unknown`` without git."""
    repo = Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{sha}-dirty" if dirty else sha


def versions() -> dict[str, str]:
    """saebench version and git sha, torch and Python versions."""
    import torch

    import saebench

    return {
        "saebench": saebench.__version__,
        "git_sha": _git_sha(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def default_device() -> str:
    """``cuda:<device name>`` when a GPU is visible, else ``cpu``."""
    import torch

    return f"cuda:{torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "cpu"


def build_record(
    *,
    paper: str,
    tier: str,
    seed: int,
    config: dict[str, Any],
    outcomes: Sequence[ClaimOutcome],
    result: PipelineResult | None,
    wall_time_s: float,
    missing: Sequence[str] = (),
) -> dict[str, Any]:
    """The record of one reproduction run; ``result`` is None (``missing`` non-empty) for a skipped tier."""
    summary = {status: sum(o.status == status for o in outcomes) for status in STATUSES}
    return {
        "schema_version": SCHEMA_VERSION,
        "paper": paper,
        "tier": tier,
        "seed": seed,
        "status": "skipped" if result is None else "ran",
        "missing": list(missing),
        "config": config,
        "config_hash": config_hash(config),
        "versions": versions(),
        "device": (result.device if result is not None and result.device else default_device()),
        "wall_time_s": round(wall_time_s, 3),
        "runs": [] if result is None else [{"fields": r.fields, "metrics": r.metrics} for r in result.runs],
        "checks": {}
        if result is None
        else {n: {"passed": c.passed, "detail": c.detail} for n, c in sorted(result.checks.items())},
        "claims": [o.to_dict() for o in outcomes],
        "summary": summary,
    }


def record_path(results_dir: str | Path, paper: str, tier: str, seed: int) -> Path:
    """``<results>/runs/<paper>-<tier>.json`` for the default seed 0, ``...-seed<N>.json`` otherwise."""
    suffix = "" if seed == DEFAULT_SEED else f"-seed{seed}"
    return Path(results_dir) / "runs" / f"{paper}-{tier}{suffix}.json"


def write_record(record: dict[str, Any], results_dir: str | Path) -> Path:
    """Write ``record`` to its :func:`record_path` (creating folders) and return the path."""
    _validate(record, "record")
    path = record_path(results_dir, record["paper"], record["tier"], record["seed"])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dump_json(record))
    return path


def read_record(path: str | Path) -> dict[str, Any]:
    """Load and validate one record; errors name the file."""
    path = Path(path)
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise RecordError(f"{path}: not valid JSON ({exc})") from None
    _validate(record, str(path))
    return record


def read_records(results_dir: str | Path) -> list[dict[str, Any]]:
    """Every record under ``<results>/runs/``, sorted by paper, tier (toy, mini, full) and seed."""
    runs_dir = Path(results_dir) / "runs"
    records = [read_record(p) for p in sorted(runs_dir.glob("*.json"))] if runs_dir.is_dir() else []
    return sorted(records, key=lambda r: (r["paper"], TIERS.index(r["tier"]), r["seed"]))


def _validate(record: Any, where: str) -> None:
    if not isinstance(record, dict):
        raise RecordError(f"{where}: a run record must be a JSON object")
    if record.get("schema_version") != SCHEMA_VERSION:
        raise RecordError(
            f"{where}: schema_version {record.get('schema_version')!r} is not {SCHEMA_VERSION}; "
            "re-run `saebench reproduce` to regenerate it"
        )
    missing, unknown = RECORD_KEYS - set(record), set(record) - RECORD_KEYS
    if missing or unknown:
        raise RecordError(f"{where}: missing key(s) {sorted(missing)}, unknown key(s) {sorted(unknown)}")
    if record["tier"] not in TIERS or record["status"] not in ("ran", "skipped"):
        raise RecordError(f"{where}: tier {record['tier']!r} / status {record['status']!r} is not valid")
    for claim in record["claims"]:
        if not isinstance(claim, dict) or claim.get("status") not in STATUSES:
            raise RecordError(f"{where}: claim entry {claim!r} has no valid status ({', '.join(STATUSES)})")
