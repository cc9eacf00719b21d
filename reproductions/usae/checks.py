"""The named checks of the USAE claims (``check:`` entries of ``claims.yaml``), shared by every tier."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from saebench.repro.pipeline import CheckResult

__all__ = ["r2_checks", "consistency_check"]


def r2_checks(table: torch.Tensor) -> dict[str, CheckResult]:
    """``r2-diagonal-dominates``: every ``R^2[i, i]`` is above the other entries of its row and column;
    ``r2-off-diagonal-positive``: every cross-model entry is > 0 (paper §4.2, Fig. 5). ``table``: ``(M, M)``
    encoder ``i`` -> dictionary ``j``."""
    off = ~torch.eye(len(table), dtype=torch.bool)
    diag_min, off_max, off_min = (
        table.diagonal().min().item(),
        table[off].max().item(),
        table[off].min().item(),
    )
    rows_ok = all(
        table[i, i] > table[i, j] and table[i, i] > table[j, i]
        for i in range(len(table))
        for j in range(len(table))
        if i != j
    )
    return {
        "r2-diagonal-dominates": CheckResult(
            passed=rows_ok,
            detail=f"every R^2[i,i] above the other entries of its row and column: "
            f"min diagonal {diag_min:.3f}, "
            f"max off-diagonal {off_max:.3f}",
        ),
        "r2-off-diagonal-positive": CheckResult(
            passed=off_min > 0, detail=f"min off-diagonal R^2 {off_min:.3f} (must be > 0)"
        ),
    }


def consistency_check(consistency: Mapping[str, Mapping[str, float]]) -> dict[str, CheckResult]:
    """``consistency-beats-baseline``: every model's USAE-vs-independent AUC is above its random-normal
    baseline's (§4.4, Fig. 7). ``consistency``: ``{model: {metric: value}}`` with ``consistency_auc`` and
    ``consistency_baseline_auc``."""
    passed = all(v["consistency_auc"] > v["consistency_baseline_auc"] for v in consistency.values())
    detail = "; ".join(
        f"{name}: AUC {v['consistency_auc']:.3f} vs baseline {v['consistency_baseline_auc']:.3f}"
        for name, v in consistency.items()
    )
    return {"consistency-beats-baseline": CheckResult(passed=passed, detail=detail)}
