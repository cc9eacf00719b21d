"""Streaming universality metrics (saebench.metrics.universality_stream) against hand-computed values and
against the one-shot functions of saebench.metrics.universality on the same rows."""

from __future__ import annotations

import math

import pytest
import torch

from saebench.metrics.reconstruction import USAE_R2_EPS
from saebench.metrics.universality import (
    cofire_counts,
    concept_energy,
    cross_r2_matrix,
    dead_concept_fractions,
    fire_counts,
)
from saebench.metrics.universality_stream import UniversalityAccumulator
from saebench.sae.universal import UniversalSAE, UniversalSAEConfig


def _identity_usae() -> UniversalSAE:
    """Two models A, B of width 3, m = 3, k = 1; every encoder is x -> TopK_1(ReLU(x)) exactly (identity
    Linear without bias, BatchNorm in eval mode with mean 0, variance 1, eps 0) and every dictionary is I."""
    usae = UniversalSAE(UniversalSAEConfig({"A": 3, "B": 3}, 3, k=1))
    with torch.no_grad():
        for name in usae.models:
            usae.encoders[name].linear.weight.copy_(torch.eye(3))
            usae.encoders[name].linear.bias.zero_()
            usae.encoders[name].norm.eps = 0.0
            usae.dictionaries[name].copy_(torch.eye(3))
    return usae


# concept 2 never fires in either model; B's row 1 is active (0.05 > 0) but below tau = 0.1
X = {
    "A": torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [2.0, 0.0, -1.0]]),
    "B": torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.05, 0.0], [0.0, 3.0, -1.0]]),
}


def test_hand_computed_counts_entropy_energy_and_dead_concepts():
    accumulator = UniversalityAccumulator(_identity_usae(), threshold=0.1)
    accumulator.update(X)
    report = accumulator.report()
    # codes: A = [[1,0,0],[0,1,0],[2,0,0]], B = [[1,0,0],[0,.05,0],[0,3,0]]
    assert report.fires.tolist() == [[2, 1, 0], [1, 1, 0]]
    assert report.active.tolist() == [[2, 1, 0], [1, 2, 0]]
    assert report.cofires.tolist() == [1, 0, 0]  # concept 0 fires in both models on row 0 only
    # FE of concept 0: p = (2/3, 1/3): -(2/3 log2 2/3 + 1/3 log2 1/3) / log2 2 = 0.9183
    fe = report.firing_entropy
    assert fe[0].item() == pytest.approx(-(2 / 3) * math.log2(2 / 3) - (1 / 3) * math.log2(1 / 3), abs=1e-8)
    assert fe[1].item() == pytest.approx(1.0, abs=1e-8) and fe[2].item() == pytest.approx(0.0, abs=1e-8)
    # CFP of concept 0: |C| / |F_A| = 1/2, |C| / |F_B| = 1/1
    assert report.cofire_proportion[:, 0].tolist() == pytest.approx([0.5, 1.0], abs=1e-9)
    # energy = |mean code| * ||D_k|| (unit atoms): A (3/3, 1/3, 0), B (1/3, 3.05/3, 0)
    assert report.energy[0].tolist() == pytest.approx([1.0, 1 / 3, 0.0], abs=1e-7)
    assert report.energy[1].tolist() == pytest.approx([1 / 3, 3.05 / 3, 0.0], abs=1e-7)
    assert report.dead_fraction.tolist() == pytest.approx([1 / 3, 1 / 3])
    assert report.dead_fraction_after_threshold.tolist() == pytest.approx([1 / 3, 1 / 3])


def test_hand_computed_cross_r2_and_mse():
    accumulator = UniversalityAccumulator(_identity_usae())
    accumulator.update(X)
    report = accumulator.report()
    # A -> B: x_hat_B = codes_A = [[1,0,0],[0,1,0],[2,0,0]]; residual squares
    # 0.95^2 + 2^2 + 3^2 + 1^2 = 14.9025 over 9 entries; x_B sums to 3.05 and its squares to 11.0025, so
    # its variance is 11.0025/9 - (3.05/9)^2
    residual = 14.9025 / 9
    variance = 11.0025 / 9 - (3.05 / 9) ** 2
    assert report.mse[0, 1].item() == pytest.approx(residual, rel=1e-6)
    assert report.r2[0, 1].item() == pytest.approx(1 - residual / (variance + USAE_R2_EPS), rel=1e-6)
    # A -> A: codes_A misses only the -1 of row 2: residual 1 / 9
    assert report.mse[0, 0].item() == pytest.approx(1 / 9, rel=1e-6)


def test_streamed_batches_match_the_one_shot_functions():
    torch.manual_seed(0)
    usae = UniversalSAE(UniversalSAEConfig({"A": 6, "B": 5, "C": 4}, 16, k=4))
    x = {"A": torch.randn(40, 6), "B": torch.randn(40, 5), "C": torch.randn(40, 4)}
    usae.train()
    for _ in range(3):  # move BatchNorm's running statistics off their initial values
        for name in usae.models:
            usae.encode(name, x[name])
    accumulator = UniversalityAccumulator(usae, threshold=0.1)
    for rows in (slice(0, 25), slice(25, 40)):
        accumulator.update({name: t[rows] for name, t in x.items()})
    report = accumulator.report()
    assert usae.training  # the accumulator restores the module's mode
    usae.eval()
    with torch.no_grad():
        codes = {name: usae.encode(name, x[name])[1] for name in usae.models}
    assert torch.equal(report.fires, torch.stack([fire_counts(c, 0.1) for c in codes.values()]))
    assert torch.equal(report.cofires, cofire_counts(list(codes.values()), 0.1))
    for a, name in enumerate(usae.models):
        # float64 sums of float32 codes over two batches vs one mean: equal to rounding
        assert torch.allclose(report.energy[a], concept_energy(codes[name], usae.dictionary(name)), atol=1e-6)
        before, after = dead_concept_fractions(codes[name], 0.1)
        assert (
            report.dead_fraction[a].item() == before
            and report.dead_fraction_after_threshold[a].item() == after
        )
    assert report.n_rows == 40 and report.n_batches == 2

    single = UniversalityAccumulator(usae)
    single.update(x)
    # one batch: the batch average is the pooled value of cross_r2_matrix (same float64 kernel)
    assert torch.allclose(single.report().r2, cross_r2_matrix(usae, x), atol=1e-12)


def test_bad_batches_and_empty_reports_are_refused():
    accumulator = UniversalityAccumulator(_identity_usae())
    with pytest.raises(ValueError, match="no batch"):
        accumulator.report()
    with pytest.raises(ValueError, match="one tensor per model"):
        accumulator.update({"A": X["A"]})
    with pytest.raises(ValueError, match="aligned"):
        accumulator.update({"A": X["A"], "B": X["B"][:2]})
