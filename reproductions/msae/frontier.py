"""The sparsity-fidelity frontier of MSAE §4.2 (msae.md §1.2): points, the dominance test, the figure.

Each SAE contributes points ``(L0, FVU)``: mean count of active latents per row, mean per-sample FVU
(msae.md §2.2), both on the evaluation rows (lower is better on both axes).

- A baseline (ReLU, TopK, BatchTopK) gives one point: its own output (``l0``, ``msae_fvu``).
- An MSAE gives one point per ``k`` of the authors' progressive sweep (``score_topk_sae_embeddings.py``:
  the top ``k`` of its ReLU codes, ``k = 16, 32, ..., m``; ``k = m`` is its full output): the paper's
  claim is that one MSAE serves every granularity (§4.3).

**Dominance test** (:func:`dominance_check`): MSAE dominates the baselines when *every* baseline point is
weakly dominated by some point of that MSAE: a point with ``L0 <= L0_baseline`` and
``FVU <= FVU_baseline``. No interpolation between MSAE points: a baseline whose L0 falls between two of
MSAE's ``k`` is compared with the sparser MSAE point only, which favours the baseline.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from saebench.repro.pipeline import CheckResult, Run
from saebench.viz.pareto import plot_pareto

__all__ = ["Point", "baseline_point", "msae_points", "dominance_check", "plot_frontiers"]

Point = tuple[float, float]


def baseline_point(run: Run) -> Point:
    """``(l0, msae_fvu)`` of a run's own output."""
    return run.metrics["l0"], run.metrics["msae_fvu"]


def msae_points(run: Run) -> list[Point]:
    """``(msae_l0_at_k{k}, msae_fvu_at_k{k})`` for every swept ``k``, in increasing ``k``."""
    ks = sorted(
        int(key.removeprefix("msae_fvu_at_k")) for key in run.metrics if key.startswith("msae_fvu_at_k")
    )
    if not ks:
        raise ValueError(f"run {run.label()} has no progressive sweep metrics (msae_fvu_at_k<k>)")
    return [(run.metrics[f"msae_l0_at_k{k}"], run.metrics[f"msae_fvu_at_k{k}"]) for k in ks]


def _margin(point: Point, frontier: Sequence[Point]) -> float | None:
    """``FVU_baseline - min FVU`` over frontier points no denser than ``point`` (None when there is none);
    >= 0 means the point is weakly dominated."""
    candidates = [fvu for l0, fvu in frontier if l0 <= point[0]]
    return point[1] - min(candidates) if candidates else None


def dominance_check(msae: Run, baselines: Sequence[Run]) -> CheckResult:
    """Does every baseline point lie weakly inside ``msae``'s points? (the module docstring's test)."""
    if not baselines:
        raise ValueError("the dominance test needs at least one baseline run")
    frontier = msae_points(msae)
    parts, passed = [], True
    for run in baselines:
        point = baseline_point(run)
        margin = _margin(point, frontier)
        ok = margin is not None and margin >= 0
        passed &= ok
        shown = "no MSAE point as sparse" if margin is None else f"margin {margin:+.4f}"
        parts.append(
            f"{run.fields['name']} (L0 {point[0]:.1f}, FVU {point[1]:.4f}): {shown}{'' if ok else ' FAIL'}"
        )
    return CheckResult(passed=passed, detail="; ".join(parts))


def plot_frontiers(series: Mapping[str, Sequence[Point]], path: str | Path, title: str) -> Path:
    """The PNG of FVU against L0 (log scale), one series per label (e.g. ``"zoo-clip msae-rw"``)."""
    return plot_pareto(
        series,
        path,
        xlabel="active latents per row (L0)",
        ylabel="FVU (mean per sample)",
        title=title,
        log_x=True,
    )
