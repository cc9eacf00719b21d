"""Selective-remapping groups and the improvement rate (patchsae.md §2.6, Table 1) against hand examples."""

from __future__ import annotations

import pytest
import torch

from saebench.metrics.remapping import improvement_rate, remapping_groups


def test_groups_by_hand():
    # one class, 6 latents, high bound = 2nd largest value, low bound = 4th largest value
    before = torch.tensor([[10, 9, 8, 7, 1, 0], [0, 0, 0, 0, 0, 5]])
    after = torch.tensor([[10, 0, 8, 7, 9, 1], [0, 0, 0, 0, 0, 5]])
    groups = remapping_groups(before, after, high_rank=2, low_rank=4)
    # class 0 before: high {0, 1} (>= 9), low {4, 5} (< 7); after: high {0, 4}, low {1, 5}
    assert groups.high[0].nonzero().flatten().tolist() == [0]
    assert groups.high_to_low[0].nonzero().flatten().tolist() == [1]
    assert groups.low_to_high[0].nonzero().flatten().tolist() == [4]
    # class 1: the 2nd largest value is 0, and a zero count is never high: high = {5}; nothing is < 0
    assert groups.high[1].nonzero().flatten().tolist() == [5]
    assert not groups.high_to_low[1].any() and not groups.low_to_high[1].any()
    # per-class averages: high (1 + 1) / 2, high->low (1 + 0) / 2, low->high (1 + 0) / 2
    assert groups.mean_counts() == {"high": 1.0, "high_to_low": 0.5, "low_to_high": 0.5}


def test_groups_validate_ranks_and_shapes():
    stats = torch.zeros(2, 5)
    with pytest.raises(ValueError, match="high_rank"):
        remapping_groups(stats, stats, high_rank=4, low_rank=3)
    with pytest.raises(ValueError, match="one shape"):
        remapping_groups(stats, torch.zeros(2, 4))


def test_improvement_rate_table1_stanford_cars():
    # Table 1, StanfordCars base: (56.16 - 53.45) / (100 - 53.45) * 100 = 2.71 / 46.55 * 100 = 5.8217
    assert improvement_rate(56.16, 53.45) == pytest.approx(5.82170, abs=1e-5)
    # no change -> 0; reaching 100% -> 100
    assert improvement_rate(40.0, 40.0) == 0.0
    assert improvement_rate(100.0, 40.0) == pytest.approx(100.0)
    with pytest.raises(ValueError, match="percentages"):
        improvement_rate(0.5, 100.0)
