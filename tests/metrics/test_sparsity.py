"""Sparsity metrics against hand counts on the ``codes`` fixture:

[[0,   1.5, 0, 0   ],
 [0.2, 0,   0, 0   ],
 [0,   3.0, 0, 0.05]]      non-zeros per row: 1, 1, 2; per latent: 1, 2, 0, 1 (of 3 rows)
"""

from __future__ import annotations

import pytest
import torch

from saebench.metrics import (
    HIGH_FREQUENCY_THRESHOLD,
    dead_latent_fraction,
    dead_latent_mask,
    dense_latent_fraction,
    dense_latent_mask,
    firing_frequency,
    l0_count,
    sparsity_fraction,
)

EXACT = 1e-12  # counts over 3 or 12 entries, evaluated in float64


def test_l0_count(codes):
    # (1 + 1 + 2) / 3 rows
    assert l0_count(codes) == pytest.approx(4 / 3, abs=EXACT)
    # with a firing threshold of 0.1 the 0.05 entry no longer counts: (1 + 1 + 1) / 3
    assert l0_count(codes, threshold=0.1) == pytest.approx(1.0, abs=EXACT)


def test_sparsity_fraction_is_the_share_of_exact_zeros(codes):
    # zeros: 3 + 3 + 2 = 8 of 12 entries; equals 1 - l0 / n_latents = 1 - (4/3) / 4
    assert sparsity_fraction(codes) == pytest.approx(8 / 12, abs=EXACT)
    assert sparsity_fraction(codes) == pytest.approx(1 - l0_count(codes) / 4, abs=EXACT)


def test_firing_frequency(codes):
    expected = torch.tensor([1 / 3, 2 / 3, 0.0, 1 / 3], dtype=torch.float64)
    torch.testing.assert_close(firing_frequency(codes), expected)


def test_negative_codes_fire_by_magnitude(codes):
    torch.testing.assert_close(firing_frequency(-codes), firing_frequency(codes))


def test_dead_latents(codes):
    # only latent 2 never fires
    assert dead_latent_mask(codes).tolist() == [False, False, True, False]
    assert dead_latent_fraction(codes) == pytest.approx(1 / 4, abs=EXACT)
    # with a frequency floor of 1/3, latents 0 and 3 (frequency exactly 1/3) count as dead too
    assert dead_latent_mask(codes, max_frequency=1 / 3).tolist() == [True, False, True, True]


def test_dense_latents(codes):
    # frequencies 1/3, 2/3, 0, 1/3: above 0.5 only latent 1; above the default 0.1 all but latent 2
    assert dense_latent_mask(codes, min_frequency=0.5).tolist() == [False, True, False, False]
    assert dense_latent_fraction(codes, min_frequency=0.5) == pytest.approx(1 / 4, abs=EXACT)
    assert HIGH_FREQUENCY_THRESHOLD == 0.1
    assert dense_latent_fraction(codes) == pytest.approx(3 / 4, abs=EXACT)


def test_bad_arguments_are_rejected(codes):
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
        dead_latent_fraction(codes, max_frequency=2.0)
    with pytest.raises(ValueError, match=r"firing threshold must be >= 0"):
        l0_count(codes, threshold=-1.0)
    bad = codes.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"codes contains 1 NaN/Inf"):
        l0_count(bad)
