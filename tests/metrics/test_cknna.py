"""CKNNA (msae.md §2.6): the unbiased HSIC by hand, the mutual-kNN mask, invariances and batching."""

from __future__ import annotations

import pytest
import torch

from saebench.metrics.cknna import cknna, cknna_batched, hsic_unbiased, knn_mask


def test_hsic_of_one_linked_pair_by_hand():
    # n = 4, K = L = 1 at (0,1) and (1,0) only. tr(K L) = 2; sum K * sum L / (3 * 2) = 4/6;
    # sum(K L) = 2 (K^2 has ones at (0,0), (1,1)) -> 2 * 2 / (n-2) = 2. (2 + 2/3 - 2) / (4 * 1) = 1/6.
    K = torch.zeros(4, 4, dtype=torch.float64)
    K[0, 1] = K[1, 0] = 1.0
    assert float(hsic_unbiased(K, K)) == pytest.approx(1 / 6)


def test_hsic_of_a_constant_kernel_is_zero_by_hand():
    # K = L = J - I (n = 4): tr = 12; 12 * 12 / 6 = 24; (J - I)^2 = 2J + I sums to 36 -> 2 * 36 / 2 = 36.
    K = torch.ones(4, 4, dtype=torch.float64) - torch.eye(4, dtype=torch.float64)
    assert float(hsic_unbiased(K, K)) == pytest.approx(0.0)


def test_hsic_ignores_the_diagonal():
    K = torch.zeros(4, 4, dtype=torch.float64)
    K[0, 1] = K[1, 0] = 1.0
    assert float(hsic_unbiased(K + 5 * torch.eye(4, dtype=torch.float64), K)) == pytest.approx(1 / 6)


def test_knn_mask_excludes_the_diagonal():
    K = torch.tensor([[9.0, 1.0, 2.0], [1.0, 9.0, 3.0], [2.0, 3.0, 9.0]])
    # row 0: best off-diagonal is column 2 (2.0); row 1: column 2 (3.0); row 2: column 1 (3.0)
    assert knn_mask(K, 1).tolist() == [[0, 0, 1], [0, 0, 1], [0, 1, 0]]


def test_cknna_is_one_for_the_same_kernel_and_low_for_independent_data():
    torch.manual_seed(0)
    a = torch.randn(60, 8)
    q, _ = torch.linalg.qr(torch.randn(8, 8))
    # a rotation keeps A A^T: same kernel, same neighbours; the 1e-6 guard and float64 rounding only
    assert cknna(a, a @ q, topk=5) == pytest.approx(1.0, abs=1e-4)
    assert abs(cknna(a, torch.randn(60, 8), topk=5)) < 0.3  # independent: near 0 (sampling noise ~0.1)


def test_cknna_batched_skips_the_partial_batch_and_is_seeded():
    torch.manual_seed(1)
    a, b = torch.randn(50, 6), torch.randn(50, 6)
    mean, std = cknna_batched(a, b, batch_size=20, topk=3, seed=42)
    order = torch.randperm(50, generator=torch.Generator().manual_seed(42))
    # rows order[40:50] form a partial batch and are skipped
    by_hand = [cknna(a[order[i : i + 20]], b[order[i : i + 20]], topk=3) for i in (0, 20)]
    assert mean == pytest.approx(sum(by_hand) / 2)
    assert std == pytest.approx(abs(by_hand[0] - by_hand[1]) / 2**0.5)  # unbiased std of two values


def test_bad_input_is_a_clear_error():
    with pytest.raises(ValueError, match="same samples"):
        cknna(torch.randn(10, 3), torch.randn(9, 3))
    with pytest.raises(ValueError, match="topk"):
        cknna(torch.randn(10, 3), torch.randn(10, 3), topk=10)
    with pytest.raises(ValueError, match="at least batch_size"):
        cknna_batched(torch.randn(10, 3), torch.randn(10, 3), batch_size=20)
