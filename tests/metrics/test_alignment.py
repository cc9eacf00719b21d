"""Dictionary alignment and MCC on 2-D atoms placed at known angles, so every cosine is a cos(angle)."""

from __future__ import annotations

import math

import pytest
import torch

from saebench.metrics import cosine_matrix, hungarian_alignment, mcc

EXACT = 1e-12  # cosines of exactly placed unit vectors, in float64


def at_angles(*degrees: float) -> torch.Tensor:
    """Unit atoms in the plane at the given angles (degrees)."""
    radians = torch.tensor(degrees, dtype=torch.float64) * math.pi / 180
    return torch.stack([radians.cos(), radians.sin()], dim=1)


def cos_deg(degrees: float) -> float:
    return math.cos(math.radians(degrees))


def test_cosine_matrix_ignores_norms():
    a = at_angles(0, 90) * torch.tensor([[2.0], [0.5]], dtype=torch.float64)
    b = at_angles(60)
    torch.testing.assert_close(
        cosine_matrix(a, b), torch.tensor([[cos_deg(60)], [cos_deg(30)]], dtype=torch.float64)
    )


def test_hungarian_beats_greedy_matching():
    # b at 0 and 60 degrees; a at 20 and -50 degrees.
    # Cosines: a0-b0 cos20, a0-b1 cos40, a1-b0 cos50, a1-b1 cos110.
    # Greedy takes a0-b0 (cos20 = 0.94) and is left with a1-b1 (cos110 < 0): sum 0.60.
    # The optimal matching a0-b1, a1-b0 sums cos40 + cos50 = 1.41.
    alignment = hungarian_alignment(at_angles(20, -50), at_angles(0, 60), threshold=0.7)
    assert alignment.rows.tolist() == [0, 1]
    assert alignment.cols.tolist() == [1, 0]
    assert alignment.mean_cosine == pytest.approx((cos_deg(40) + cos_deg(50)) / 2, abs=EXACT)
    # cos40 = 0.766 is above 0.7, cos50 = 0.643 is not
    assert alignment.fraction_above_threshold == pytest.approx(1 / 2, abs=EXACT)


def test_unmatched_reference_atoms_score_zero():
    # three reference atoms, two candidates: at most two matches, averaged over all three reference atoms
    alignment = hungarian_alignment(at_angles(0, 90, 45), at_angles(0, 90))
    assert alignment.rows.tolist() == [0, 1]
    assert alignment.mean_cosine == pytest.approx(2 / 3, abs=EXACT)
    assert alignment.fraction_above_threshold == pytest.approx(2 / 3, abs=EXACT)


def test_signed_matching_treats_negated_atoms_as_different():
    a = at_angles(0, 90)
    # against the negated atoms the signed cosine matrix is [[-1, 0], [0, -1]]:
    # the best signed matching takes the zeros
    assert hungarian_alignment(a, -a).mean_cosine == pytest.approx(0.0, abs=EXACT)
    assert hungarian_alignment(a, -a, absolute=True).mean_cosine == pytest.approx(1.0, abs=EXACT)


def test_mcc_of_a_rotated_basis():
    # learned atoms = the true basis rotated by 30 degrees: |cosines| [[cos30, sin30], [sin30, cos30]]
    assert mcc(at_angles(30, 120), at_angles(0, 90)) == pytest.approx(cos_deg(30), abs=EXACT)


def test_mcc_is_invariant_to_permutation_sign_and_scale():
    true = torch.randn(32, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    signs = torch.where(torch.arange(32) % 2 == 0, 1.0, -1.0).to(torch.float64)
    scales = torch.linspace(0.1, 10.0, 32, dtype=torch.float64)
    learned = (true * (signs * scales)[:, None])[
        torch.randperm(32, generator=torch.Generator().manual_seed(1))
    ]
    assert mcc(learned, true) == pytest.approx(1.0, abs=EXACT)
    # extra learned atoms (an overcomplete SAE) do not lower it
    extra = torch.randn(64, 16, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    assert mcc(torch.cat([extra, learned]), true) == pytest.approx(1.0, abs=EXACT)


def test_mcc_with_fewer_learned_atoms_counts_the_missing_ones_as_zero():
    true = torch.eye(3, dtype=torch.float64)
    assert mcc(true[:2], true) == pytest.approx(2 / 3, abs=EXACT)


def test_mcc_of_random_atoms_is_far_below_recovery():
    gen = torch.Generator().manual_seed(3)
    true, learned = torch.randn(256, 64, generator=gen), torch.randn(256, 64, generator=gen)
    # random directions in 64 dims have |cos| ~ 0.1; even the best one-to-one matching stays far from 0.9
    assert mcc(learned, true) < 0.5


def test_bad_dictionaries_are_rejected():
    with pytest.raises(ValueError, match=r"different spaces: a has d=2, b has d=3"):
        cosine_matrix(torch.ones(2, 2), torch.ones(2, 3))
    with pytest.raises(ValueError, match=r"1 all-zero atom"):
        mcc(torch.zeros(1, 2), torch.ones(1, 2))
    with pytest.raises(ValueError, match=r"\(n_atoms, d\)"):
        mcc(torch.ones(2), torch.ones(2, 2))
    with pytest.raises(ValueError, match=r"NaN/Inf"):
        mcc(torch.tensor([[float("nan"), 1.0]]), torch.ones(1, 2))
