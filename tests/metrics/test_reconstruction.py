"""Reconstruction metrics against values computed by hand on the two-row ``pair`` fixture:

x     = [[1, 2, 3], [4, 6, 8]]        x_hat = [[1, 2, 4], [4, 5, 8]]
squared errors per row: 1 and 1 (sum 2, over 6 entries); ||x_1||^2 = 14, ||x_2||^2 = 116.
"""

from __future__ import annotations

import math

import pytest
import torch

from saebench.metrics import (
    USAE_R2_EPS,
    cosine_similarity_mean,
    cosine_similarity_per_sample,
    explained_variance_uncentered,
    fvu_dataset,
    fvu_per_sample,
    fvu_per_sample_mean,
    mse,
    mse_normalized_by_input_norm,
    normalized_mse,
    r2_global_mean,
    r2_global_mean_batch_averaged,
    r2_per_dimension_mean,
)

# Hand-computed values are exact rationals evaluated in float64; 1e-12 only absorbs rounding.
EXACT = 1e-12


def test_mse(pair):
    # sum of squared errors 2, over n * d = 6 entries
    assert mse(*pair) == pytest.approx(2 / 6, abs=EXACT)


def test_normalized_mse_is_mean_of_per_row_ratios(pair):
    # row 1: 1 / 14; row 2: 1 / 116
    assert normalized_mse(*pair) == pytest.approx((1 / 14 + 1 / 116) / 2, abs=EXACT)


def test_mse_normalized_by_input_norm(pair):
    # per row: mean squared error (1/3) divided by ||x_i|| (sqrt 14, sqrt 116), then averaged
    expected = ((1 / 3) / math.sqrt(14) + (1 / 3) / math.sqrt(116)) / 2
    assert mse_normalized_by_input_norm(*pair) == pytest.approx(expected, abs=EXACT)


def test_fvu_dataset(pair):
    # per-dimension means [2.5, 4, 5.5]
    # centred sums of squares 2*1.5^2 + 2*2^2 + 2*2.5^2 = 4.5 + 8 + 12.5 = 25
    assert fvu_dataset(*pair) == pytest.approx(2 / 25, abs=EXACT)
    assert r2_per_dimension_mean(*pair) == pytest.approx(1 - 2 / 25, abs=EXACT)


def test_fvu_per_sample(pair):
    # row 1: Var([1,2,3]) = 2/3; error [0,0,1] has mean 1/3 and Var = (1/9 + 1/9 + 4/9) / 3 = 2/9 -> ratio 1/3
    # row 2: Var([4,6,8]) = 8/3; error [0,-1,0] has Var 2/9 -> ratio (2/9) / (8/3) = 1/12
    torch.testing.assert_close(fvu_per_sample(*pair), torch.tensor([1 / 3, 1 / 12], dtype=torch.float64))
    assert fvu_per_sample_mean(*pair) == pytest.approx((1 / 3 + 1 / 12) / 2, abs=EXACT)


def test_r2_global_mean_uses_one_scalar_mean_and_usae_epsilon(pair):
    # scalar mean of x = 24 / 6 = 4; squared deviations 9, 4, 1, 0, 4, 16 -> mean 34 / 6; residual mean 2 / 6
    expected = 1 - (2 / 6) / (34 / 6 + 1e-6)
    assert r2_global_mean(*pair) == pytest.approx(expected, abs=EXACT)
    assert USAE_R2_EPS == 1e-6
    # the scalar mean leaves the per-dimension offsets in the denominator, so it is the larger R^2 here
    assert r2_global_mean(*pair) > r2_per_dimension_mean(*pair)


def test_r2_global_mean_batch_averaged_averages_per_batch_values(pair):
    # batch = one row. Row 1: mean 2, total (1 + 0 + 1) / 3 = 2/3, residual 1/3. Row 2: mean 6, total 8/3.
    expected = ((1 - (1 / 3) / (2 / 3 + 1e-6)) + (1 - (1 / 3) / (8 / 3 + 1e-6))) / 2
    assert r2_global_mean_batch_averaged(*pair, batch_size=1) == pytest.approx(expected, abs=EXACT)
    # one batch holding every row is the pooled value
    assert r2_global_mean_batch_averaged(*pair, batch_size=2) == pytest.approx(
        r2_global_mean(*pair), abs=EXACT
    )


def test_explained_variance_uncentered(pair):
    # 1 - sum of squared errors / sum of squared norms = 1 - 2 / (14 + 116)
    assert explained_variance_uncentered(*pair) == pytest.approx(1 - 2 / 130, abs=EXACT)


def test_cosine_similarity(pair):
    # row 1: <x, x_hat> = 1 + 4 + 12 = 17, norms sqrt 14 and sqrt 21
    # row 2: <x, x_hat> = 16 + 30 + 64 = 110, norms sqrt 116 and sqrt 105
    per_row = [17 / math.sqrt(14 * 21), 110 / math.sqrt(116 * 105)]
    torch.testing.assert_close(
        cosine_similarity_per_sample(*pair), torch.tensor(per_row, dtype=torch.float64)
    )
    assert cosine_similarity_mean(*pair) == pytest.approx(sum(per_row) / 2, abs=EXACT)


def test_perfect_reconstruction_scores():
    x = torch.randn(50, 8, generator=torch.Generator().manual_seed(1))
    assert mse(x, x) == 0
    assert fvu_dataset(x, x) == 0
    assert fvu_per_sample_mean(x, x) == 0
    assert r2_per_dimension_mean(x, x) == 1
    assert explained_variance_uncentered(x, x) == 1
    assert cosine_similarity_mean(x, x) == pytest.approx(1.0, abs=1e-12)  # float64 rounding of x.x / |x|^2


def test_leading_dimensions_are_rows(pair):
    x, x_hat = pair
    tokens = (x.reshape(1, 2, 3), x_hat.reshape(1, 2, 3))  # (images, tokens, d)
    for metric in (mse, fvu_dataset, fvu_per_sample_mean, r2_global_mean, cosine_similarity_mean):
        assert metric(*tokens) == metric(x, x_hat)


def test_mismatched_shapes_are_rejected(pair):
    x, x_hat = pair
    with pytest.raises(ValueError, match=r"x has shape \(2, 3\) but x_hat has shape \(2, 2\)"):
        fvu_dataset(x, x_hat[:, :2])


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_values_are_rejected(pair, bad):
    x, x_hat = pair
    x_hat = x_hat.clone()
    x_hat[1, 2] = bad
    with pytest.raises(ValueError, match=r"x_hat contains 1 NaN/Inf"):
        mse(x, x_hat)


def test_vectors_and_empty_tensors_are_rejected():
    with pytest.raises(ValueError, match=r"at least one row dimension"):
        mse(torch.ones(3), torch.ones(3))
    with pytest.raises(ValueError, match=r"is empty"):
        mse(torch.ones(0, 3), torch.ones(0, 3))


def test_undefined_per_sample_ratios_raise_with_the_reason(pair):
    x, x_hat = pair
    x = torch.cat([x, torch.full((1, 3), 5.0)])  # a constant row: zero variance across coordinates
    x_hat = torch.cat([x_hat, torch.zeros(1, 3)])
    with pytest.raises(ValueError, match=r"zero variance across its coordinates: 1 such row"):
        fvu_per_sample_mean(x, x_hat)
    zero_row = torch.cat([pair[0], torch.zeros(1, 3)])
    with pytest.raises(ValueError, match=r"all zeros"):
        normalized_mse(zero_row, x_hat)


def test_fvu_dataset_on_identical_rows_raises():
    x = torch.ones(4, 3)
    with pytest.raises(ValueError, match=r"every row of x is identical"):
        fvu_dataset(x, x + 1)


def test_batch_size_must_be_positive(pair):
    with pytest.raises(ValueError, match=r"batch_size must be a positive int"):
        r2_global_mean_batch_averaged(*pair, batch_size=0)
