"""Selective remapping: how class-level latent statistics move when a frozen backbone is adapted.

PatchSAE (Lim et al., ICLR 2025, §4.2, Table 1, Figs. 5c, 6, 17-19; patchsae.md §2.6). One SAE, trained on
the frozen backbone (CLIP), encodes the tokens of both the frozen and an adapted backbone that shares its
weights (MaPLe adds prompt tokens). Per class ``c`` the statistics ``a_c[s]`` (Eq. 5,
:func:`saebench.metrics.patch_stats.class_latent_statistics`) before (x) and after (y) adaptation are split
into

- "high": high in both; "high->low": high before, low after; "low->high": low before, high after.

Table 1 reports the per-class average size of each group and the improvement rate
``Delta = (adapted - zero_shot) / (100 - zero_shot) * 100`` on the base classes (:func:`improvement_rate`).

The paper describes the bounds only as "union top-50 and top-100" (upper from top-50, lower from top-100) and
the analysis code is not public. :func:`remapping_groups` implements our reading (NOTES.md): per class and per
backbone, "high" means at or above the value of the class's ``high_rank``-th largest latent (and > 0), "low"
means below the value of its ``low_rank``-th largest latent.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

__all__ = [
    "HIGH_RANK",
    "LOW_RANK",
    "RemappingGroups",
    "remapping_groups",
    "improvement_rate",
]

HIGH_RANK = 50
"""Rank whose value is the upper ("high") bound: "top-50" (paper §4.2)."""

LOW_RANK = 100
"""Rank whose value is the lower ("low") bound: "top-100" (paper §4.2)."""


class RemappingGroups(NamedTuple):
    """``(n_classes, h)`` bool masks of each group; :meth:`mean_counts` gives Table 1's per-class averages."""

    high: torch.Tensor
    high_to_low: torch.Tensor
    low_to_high: torch.Tensor

    def mean_counts(self) -> dict[str, float]:
        """Average number of latents per class in each group (Table 1's latent-count columns)."""
        return {name: float(mask.sum(dim=1).double().mean()) for name, mask in self._asdict().items()}


def _rank_value(stats: torch.Tensor, rank: int) -> torch.Tensor:
    """``(n_classes, 1)``: each class's ``rank``-th largest value (1-based)."""
    return stats.topk(rank, dim=1).values[:, rank - 1 : rank]


def remapping_groups(
    before: torch.Tensor, after: torch.Tensor, high_rank: int = HIGH_RANK, low_rank: int = LOW_RANK
) -> RemappingGroups:
    """Latent groups per class between ``before`` and ``after`` ``(n_classes, h)`` class statistics ``a_c``.

    Under each backbone and for each class: high = ``a_c[s] >= `` the class's ``high_rank``-th largest value
    and ``a_c[s] > 0``; low = ``a_c[s] <`` the class's ``low_rank``-th largest value. A latent between the two
    bounds is in neither, so the groups exclude borderline latents.
    """
    if before.shape != after.shape or before.ndim != 2:
        raise ValueError(
            f"before and after must be (n_classes, n_latents) of one shape, got {tuple(before.shape)} "
            f"and {tuple(after.shape)}"
        )
    if not 1 <= high_rank <= low_rank <= before.shape[1]:
        raise ValueError(
            f"need 1 <= high_rank ({high_rank}) <= low_rank ({low_rank}) <= n_latents ({before.shape[1]})"
        )

    def high_and_low(stats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        stats = stats.to(torch.float64)
        high = (stats >= _rank_value(stats, high_rank)) & (stats > 0)
        low = stats < _rank_value(stats, low_rank)
        return high, low

    high_before, low_before = high_and_low(before)
    high_after, low_after = high_and_low(after)
    return RemappingGroups(
        high=high_before & high_after,
        high_to_low=high_before & low_after,
        low_to_high=low_before & high_after,
    )


def improvement_rate(adapted: float, zero_shot: float) -> float:
    """``Delta = (adapted - zero_shot) / (100 - zero_shot) * 100``: the share of the zero-shot model's
    remaining error (accuracies in percent) that adaptation removes (paper §4.2, Table 1, base split)."""
    if not 0.0 <= zero_shot < 100.0 or not 0.0 <= adapted <= 100.0:
        raise ValueError(
            f"accuracies must be percentages with zero_shot < 100, got {adapted=} and {zero_shot=}"
        )
    return (adapted - zero_shot) / (100.0 - zero_shot) * 100.0
