"""Streaming accumulators equal the one-shot functions for any chunking; memory does not grow with rows."""

from __future__ import annotations

import math

import pytest
import torch

from saebench.metrics import (
    LatentStatsAccumulator,
    ReconstructionAccumulator,
    cosine_similarity_mean,
    dead_latent_mask,
    dense_latent_mask,
    explained_variance_uncentered,
    firing_frequency,
    fvu_dataset,
    fvu_per_sample_mean,
    l0_count,
    mse,
    mse_normalized_by_input_norm,
    normalized_mse,
    r2_global_mean,
    r2_global_mean_batch_averaged,
    r2_per_dimension_mean,
    sparsity_fraction,
)

# Both sides accumulate in float64 and differ only in summation order: agreement to ~1e-12 relative.
STREAM_RTOL = 1e-10

ONE_SHOT = {
    "mse": mse,
    "normalized_mse": normalized_mse,
    "mse_normalized_by_input_norm": mse_normalized_by_input_norm,
    "fvu_dataset": fvu_dataset,
    "fvu_per_sample_mean": fvu_per_sample_mean,
    "r2_global_mean": r2_global_mean,
    "r2_per_dimension_mean": r2_per_dimension_mean,
    "explained_variance_uncentered": explained_variance_uncentered,
    "cosine_similarity_mean": cosine_similarity_mean,
}


def stream(x: torch.Tensor, x_hat: torch.Tensor, sizes: list[int]) -> ReconstructionAccumulator:
    acc = ReconstructionAccumulator()
    for xb, hb in zip(x.split(sizes), x_hat.split(sizes), strict=True):
        acc.update(xb, hb)
    return acc


def test_uneven_chunks_equal_one_shot(offset_data):
    x, x_hat = offset_data
    result = stream(x, x_hat, [7, 150, 1, 42, 200]).compute()
    assert result.n_rows == 400 and result.n_batches == 5 and result.undefined == {}
    for name, fn in ONE_SHOT.items():
        assert getattr(result, name) == pytest.approx(fn(x, x_hat), rel=STREAM_RTOL), name


def test_per_batch_r2_matches_the_batched_one_shot(offset_data):
    x, x_hat = offset_data
    result = stream(x, x_hat, [50] * 8).compute()
    expected = r2_global_mean_batch_averaged(x, x_hat, batch_size=50)
    assert result.r2_global_mean_batch_averaged == pytest.approx(expected, rel=STREAM_RTOL)


def test_merge_equals_one_accumulator(offset_data):
    x, x_hat = offset_data
    merged = stream(x[:123], x_hat[:123], [123]).merge(stream(x[123:], x_hat[123:], [100, 177]))
    whole = stream(x, x_hat, [123, 100, 177])
    merged_values, whole_values = merged.compute().as_dict(), whole.compute().as_dict()
    assert merged_values.pop("undefined") == whole_values.pop("undefined") == {}
    assert merged_values == pytest.approx(whole_values, rel=STREAM_RTOL)


def test_token_grids_are_flattened(offset_data):
    x, x_hat = offset_data
    acc = ReconstructionAccumulator().update(x.reshape(20, 20, 16), x_hat.reshape(20, 20, 16))
    assert acc.compute().fvu_dataset == pytest.approx(fvu_dataset(x, x_hat), rel=STREAM_RTOL)


def test_large_offsets_keep_pooled_metrics_exact():
    # float32 rows around 1e6 with unit spread: centred sums must not be computed as sum(x^2) - n * mean^2
    gen = torch.Generator().manual_seed(5)
    x = (1e6 + torch.randn(3000, 8, generator=gen, dtype=torch.float64)).float()
    x_hat = x + 0.25
    result = stream(x, x_hat, [1000, 1000, 1000]).compute()
    assert result.fvu_dataset == pytest.approx(fvu_dataset(x, x_hat), rel=STREAM_RTOL)


def test_state_does_not_grow_with_rows(offset_data):
    x, x_hat = offset_data

    def state_numel(acc: ReconstructionAccumulator) -> int:
        tensors = [v for v in vars(acc).values() if isinstance(v, torch.Tensor)]
        tensors += [v for v in acc._row_sums.values()]
        return sum(t.numel() for t in tensors)

    small = stream(x[:10], x_hat[:10], [10])
    large = stream(x, x_hat, [10] * 40)
    assert state_numel(small) == state_numel(large) > 0


def test_undefined_metrics_become_nan_with_a_reason(offset_data):
    x, x_hat = offset_data
    x = torch.cat([x[:10], torch.zeros(1, 16)])  # an all-zero row: per-row ratios are undefined on it
    x_hat = x_hat[:11]
    result = ReconstructionAccumulator().update(x, x_hat).compute()
    assert math.isnan(result.fvu_per_sample_mean) and math.isnan(result.normalized_mse)
    assert "1 row(s) where x_i is all zeros" == result.undefined["normalized_mse"]
    assert result.fvu_dataset == pytest.approx(fvu_dataset(x, x_hat), rel=STREAM_RTOL)
    with pytest.raises(ValueError, match="all zeros"):
        normalized_mse(x, x_hat)


def test_reconstruction_accumulator_errors(offset_data):
    x, x_hat = offset_data
    with pytest.raises(ValueError, match=r"before any update"):
        ReconstructionAccumulator().compute()
    acc = ReconstructionAccumulator().update(x, x_hat)
    with pytest.raises(ValueError, match=r"width 16; got a batch of width 4"):
        acc.update(x[:, :4], x_hat[:, :4])
    with pytest.raises(ValueError, match=r"x has shape"):
        acc.update(x, x_hat[:3])
    bad = x.clone()
    bad[0, 0] = float("inf")
    with pytest.raises(ValueError, match=r"x contains 1 NaN/Inf"):
        acc.update(bad, x_hat)
    assert acc.n_rows == 400  # failed updates leave the state untouched


def random_codes(n: int, h: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    codes = torch.relu(torch.randn(n, h, generator=gen) - 1.0)
    codes[:, 0] = 0.0  # one latent that never fires
    codes[:, 1] = 1.0  # one latent that always fires
    return codes


def test_latent_statistics_equal_one_shot():
    codes = random_codes(300, 24, seed=0)
    acc = LatentStatsAccumulator(24)
    for chunk in codes.split([1, 99, 200]):
        acc.update(chunk)
    stats = acc.compute()
    assert stats.n_rows == 300
    torch.testing.assert_close(stats.firing_frequency, firing_frequency(codes), rtol=0, atol=0)
    assert stats.l0_count == pytest.approx(l0_count(codes), rel=STREAM_RTOL)
    assert stats.sparsity_fraction == pytest.approx(sparsity_fraction(codes), rel=STREAM_RTOL)
    assert torch.equal(stats.dead_mask(), dead_latent_mask(codes))
    assert torch.equal(stats.dense_mask(0.5), dense_latent_mask(codes, min_frequency=0.5))
    assert stats.dead_mask()[0] and stats.dense_mask(0.99)[1]
    torch.testing.assert_close(stats.mean_activation, codes.double().mean(dim=0))


def test_latent_statistics_by_hand(codes):
    # fixture codes: firing counts per latent 1, 2, 0, 1; latent 1 sums 1.5 + 3 = 4.5 over 3 rows
    stats = LatentStatsAccumulator(4).update(codes).compute()
    assert stats.firing_counts.tolist() == [1, 2, 0, 1]
    assert stats.mean_activation[1].item() == pytest.approx(4.5 / 3, abs=1e-12)
    assert stats.dead_fraction() == pytest.approx(1 / 4, abs=1e-12)
    assert stats.zero_count == 8


def test_latent_window_reset_and_threshold(codes):
    acc = LatentStatsAccumulator(4, threshold=0.1).update(codes)
    assert acc.compute().l0_count == pytest.approx(l0_count(codes, threshold=0.1), abs=1e-12)
    acc.reset()
    acc.update(codes[:1])  # the new window holds row 0 only: latent 1 fires, the rest are dead
    assert acc.compute().dead_mask().tolist() == [True, False, True, True]


def test_latent_merge_and_errors(codes):
    merged = LatentStatsAccumulator(4).update(codes[:2]).merge(LatentStatsAccumulator(4).update(codes[2:]))
    assert merged.compute().firing_counts.tolist() == [1, 2, 0, 1]
    with pytest.raises(ValueError, match=r"different \(n_latents, threshold\)"):
        merged.merge(LatentStatsAccumulator(5))
    with pytest.raises(ValueError, match=r"codes must have shape \(\.\.\., 4\)"):
        merged.update(torch.zeros(2, 5))
    with pytest.raises(ValueError, match=r"empty window"):
        LatentStatsAccumulator(4).compute()
    with pytest.raises(ValueError, match=r"n_latents must be a positive int"):
        LatentStatsAccumulator(0)
