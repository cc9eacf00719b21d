"""Running one reproduction at one tier: requirements, pipeline, comparison with claims, run record.

Shared by ``saebench reproduce`` and the pytest plugin, so both run the same code path.
"""

from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from saebench.repro.compare import ClaimOutcome, compare_claims, skipped_outcomes
from saebench.repro.pipeline import PipelineResult, Reproduction, ReproductionError, display_path
from saebench.repro.records import build_record, read_record, record_path, write_record
from saebench.repro.tiers import MissingRequirement, check_tier, missing_requirements

__all__ = ["ReproductionReport", "run_reproduction", "default_workdir"]


@dataclass(frozen=True)
class ReproductionReport:
    """The outcome of :func:`run_reproduction`. ``record_path`` is None when no record was written;
    ``note`` says why (e.g. a skip that would have replaced a record of a real run)."""

    paper: str
    tier: str
    seed: int
    outcomes: list[ClaimOutcome]
    record: dict
    record_path: Path | None
    note: str = ""

    @property
    def failed(self) -> bool:
        return any(o.failed for o in self.outcomes)

    @property
    def skipped(self) -> bool:
        return self.record["status"] == "skipped"


def default_workdir(paper: str, tier: str, seed: int) -> Path:
    """Scratch space for a pipeline (checkpoints): ``.saebench_cache/repro/<paper>-<tier>-seed<N>``."""
    return Path(".saebench_cache") / "repro" / f"{paper}-{tier}-seed{seed}"


@contextlib.contextmanager
def torch_threads(config: dict) -> Iterator[None]:
    """Run with ``config["torch_threads"]`` CPU threads (when set), restoring torch's setting afterwards.
    Small pipelines set 1: on a busy 2-core machine, oversubscribed threads made the planted toy run 14x
    slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(config.get("torch_threads", previous))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def run_reproduction(
    reproduction: Reproduction,
    tier: str,
    seed: int = 0,
    results_dir: str | Path | None = None,
    workdir: str | Path | None = None,
) -> ReproductionReport:
    """Run ``reproduction`` at ``tier``: skip every claim (naming what to supply) if the tier's requirements
    are missing here, else run the pipeline once and compare every claim of the tier. Writes the record
    under ``results_dir`` when given. Exceptions from the pipeline propagate."""
    check_tier(tier)
    claims = reproduction.claims().for_tier(tier)
    config = reproduction.config(tier)
    missing = missing_requirements(config, where=str(display_path(reproduction.config_path(tier))))
    result: PipelineResult | None = None
    start = time.perf_counter()
    if not missing:
        workdir = Path(workdir) if workdir is not None else default_workdir(reproduction.name, tier, seed)
        workdir.mkdir(parents=True, exist_ok=True)
        try:
            with torch_threads(config):
                result = reproduction.pipeline().run(tier, copy.deepcopy(config), seed, workdir)
        except MissingRequirement as exc:
            missing = [str(exc)]
        else:
            if not isinstance(result, PipelineResult):
                raise ReproductionError(
                    f"{reproduction.name}: pipeline.run returned {type(result).__name__}, "
                    "not a PipelineResult"
                )
    outcomes = skipped_outcomes(claims, missing) if missing else compare_claims(claims, result)
    record = build_record(
        paper=reproduction.name,
        tier=tier,
        seed=seed,
        config=config,
        outcomes=outcomes,
        result=result,
        wall_time_s=time.perf_counter() - start,
        missing=missing,
    )
    written, note = None, ""
    if results_dir is not None:
        existing = record_path(results_dir, reproduction.name, tier, seed)
        if missing and existing.is_file() and read_record(existing)["status"] == "ran":
            note = f"kept {existing}: it records a real run, and this machine could only skip the tier"
        else:
            written = write_record(record, results_dir)
    return ReproductionReport(
        paper=reproduction.name,
        tier=tier,
        seed=seed,
        outcomes=outcomes,
        record=record,
        record_path=written,
        note=note,
    )
