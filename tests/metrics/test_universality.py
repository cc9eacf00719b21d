"""Universality metrics (usae.md §2.1) against values computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from saebench.metrics.alignment import DictionaryAlignment
from saebench.metrics.universality import (
    cofire_counts,
    cofire_proportion,
    cofire_share,
    concept_energy,
    consistency_with_independent,
    cosine_curve_auc,
    cross_r2_matrix,
    dead_concept_fractions,
    energy_ranking,
    fire_counts,
    firing_entropy,
    log_log_correlation,
    random_normal_like,
    training_r2_matrix,
)
from saebench.sae.universal import UniversalSAE, UniversalSAEConfig


def test_firing_entropy_reference_values_for_three_models():
    # Columns: fires equally in 3 models; in 2 models; in 1 model; never.
    counts = torch.tensor([[5, 7, 9, 0], [5, 7, 0, 0], [5, 0, 0, 0]])
    fe = firing_entropy(counts)
    # p = (1/3, 1/3, 1/3): -3 (1/3) log2(1/3) / log2 3 = 1.
    assert fe[0].item() == pytest.approx(1.0, abs=1e-9)  # eps 1e-10 inside the log moves it by < 1e-9
    # p = (1/2, 1/2, 0): log2 2 / log2 3 = 1 / 1.58496 = 0.63093 (the paper's 0.631).
    assert fe[1].item() == pytest.approx(1 / math.log2(3), abs=1e-9)
    assert round(fe[1].item(), 3) == 0.631
    assert fe[2].item() == pytest.approx(0.0, abs=1e-9)  # p = (1, 0, 0)
    assert fe[3].item() == pytest.approx(0.0, abs=1e-9)  # never fires: 0, not NaN


def test_firing_entropy_of_unequal_counts():
    # p = (3/4, 1/4) over M = 2: -(0.75 log2 0.75 + 0.25 log2 0.25) / log2 2 = 0.311278 + 0.5 = 0.811278.
    fe = firing_entropy(torch.tensor([[3], [1]]))
    assert fe.item() == pytest.approx(0.811278, abs=1e-6)


def _three_models():
    # Three models, 4 rows, 3 concepts. tau = 0.1: a value of exactly 0.1 does not fire.
    z1 = torch.tensor([[0.5, 0.0, 0.2], [0.3, 0.1, 0.0], [0.0, 0.9, 0.0], [0.2, 0.0, 0.0]])
    z2 = torch.tensor([[0.4, 0.0, 0.0], [0.0, 0.5, 0.0], [0.0, 0.6, 0.0], [0.7, 0.0, 0.0]])
    z3 = torch.tensor([[0.6, 0.0, 0.0], [0.2, 0.0, 0.0], [0.0, 0.05, 0.0], [0.3, 0.0, 0.0]])
    return [z1, z2, z3]


def test_fire_and_cofire_counts_and_proportions():
    z = _three_models()
    counts = torch.stack([fire_counts(c) for c in z])
    # concept 0 fires on rows {0,1,3}, {0,3}, {0,1,3}; concept 1 on {2}, {1,2}, {}; concept 2 on {0}, {}, {}.
    assert counts.tolist() == [[3, 1, 1], [2, 2, 0], [3, 0, 0]]
    cof = cofire_counts(z)
    assert cof.tolist() == [2, 0, 0]  # rows 0 and 3 fire concept 0 in all three models
    cfp = cofire_proportion(cof, counts)
    assert cfp[:, 0].tolist() == pytest.approx([2 / 3, 1.0, 2 / 3], abs=1e-9)  # eps 1e-10 in the denominator
    assert cfp[:, 1].tolist() == pytest.approx([0.0, 0.0, 0.0])
    share = cofire_share(cof, counts)
    assert share[0].item() == pytest.approx(2 / 8, abs=1e-9)  # 2 / (3 + 2 + 3)


def test_energy_non_squared_and_squared_rank_alike():
    codes = torch.tensor([[2.0, 0.0, 1.0], [0.0, 0.0, 3.0]])
    atoms = torch.tensor([[3.0, 4.0], [1.0, 0.0], [0.0, 0.5]])
    # mean codes (1, 0, 2); norms of atoms (5, 1, 0.5) -> energy (5, 0, 1); squared (25, 0, 1).
    assert concept_energy(codes, atoms).tolist() == pytest.approx([5.0, 0.0, 1.0])
    assert concept_energy(codes, atoms, squared=True).tolist() == pytest.approx([25.0, 0.0, 1.0])
    assert energy_ranking(concept_energy(codes, atoms)).tolist() == [0, 2, 1]
    assert energy_ranking(concept_energy(codes, atoms, squared=True)).tolist() == [0, 2, 1]
    with pytest.raises(ValueError, match="dictionary must be"):
        concept_energy(codes, atoms[:2])


def test_log_log_correlation_on_a_power_law():
    cofires = torch.tensor([10.0, 100.0, 1000.0, 0.0])
    energy = torch.tensor([2.0, 2.0 * 10**0.5, 20.0, 5.0])
    # log10 cofires = 1, 2, 3; log10 energy = 0.301 + (0, 0.5, 1): slope 0.5, r = 1; the zero is dropped.
    fit = log_log_correlation(cofires, energy)
    assert fit.r == pytest.approx(1.0, abs=1e-12)
    assert fit.slope == pytest.approx(0.5, abs=1e-12)
    assert fit.n == 3
    assert log_log_correlation(cofires, energy, min_cofires=100).n == 2
    with pytest.raises(ValueError, match="at least 2 concepts"):
        log_log_correlation(cofires, energy, min_cofires=1000)


def test_dead_concepts_before_and_after_threshold():
    codes = torch.tensor([[0.0, 0.05, 0.3, 0.0], [0.0, 0.0, 0.0, 0.1]])
    # concept 0 never > 0; concepts 0, 1 and 3 never > 0.1 (0.1 itself does not fire).
    assert dead_concept_fractions(codes) == (0.25, 0.75)


def test_consistency_share_and_auc():
    usae_atoms = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    independent = torch.tensor([[1.0, 0.2], [-1.0, 0.0], [0.0, 1.0]])
    align = consistency_with_independent(usae_atoms, independent)
    # Matchings' summed cosines: (0->0, 1->1, 2->2) 0.9806 + 0 + 0.7071 = 1.688 beats e.g.
    # (0->0, 1->2, 2->1) 0.9806 + 1 - 0.7071 = 1.273 (signed cosines: the anti-parallel atom counts -0.7071).
    assert align.cosines.tolist() == pytest.approx([1 / math.sqrt(1.04), 0.0, 1 / math.sqrt(2)], abs=1e-6)
    assert align.fraction_above_threshold == pytest.approx(2 / 3)
    # AUC = mean of cosines clipped to [0, 1] = (0.98058 + 0 + 0.70711) / 3.
    assert cosine_curve_auc(align) == pytest.approx((1 / math.sqrt(1.04) + 1 / math.sqrt(2)) / 3, abs=1e-6)


def test_auc_counts_unmatched_reference_atoms_as_zero():
    align = DictionaryAlignment(
        rows=torch.tensor([0]),
        cols=torch.tensor([0]),
        cosines=torch.tensor([0.6], dtype=torch.float64),
        n_reference=2,
        threshold=0.5,
        mean_cosine=0.3,
        fraction_above_threshold=0.5,
    )
    assert cosine_curve_auc(align) == pytest.approx(0.3)


def test_random_normal_baseline_matches_scalar_moments():
    g = torch.Generator().manual_seed(0)
    dictionary = 0.5 + 2.0 * torch.randn(200, 50, generator=g)
    baseline = random_normal_like(dictionary, torch.Generator().manual_seed(1))
    assert baseline.shape == dictionary.shape
    # 10,000 draws: the sample mean's standard error is 2 / 100 = 0.02; 5 standard errors.
    assert baseline.mean().item() == pytest.approx(dictionary.mean().item(), abs=0.1)
    assert baseline.std().item() == pytest.approx(dictionary.std().item(), rel=0.05)


def test_cross_r2_matrix_entries_and_mode():
    torch.manual_seed(0)
    usae = UniversalSAE(UniversalSAEConfig({"a": 4, "b": 3}, 8, k=2))
    usae.train()
    x = {"a": torch.randn(20, 4), "b": torch.randn(20, 3)}
    table = cross_r2_matrix(usae, x)
    assert usae.training  # mode restored
    usae.eval()
    with torch.no_grad():
        x_hat = usae("b", x["b"]).x_hat["a"]
    # Entry [b, a] by hand: 1 - mean((x - x_hat)^2) / (mean((x - x.mean())^2) + 1e-6).
    mse = ((x["a"] - x_hat) ** 2).mean().item()
    var = ((x["a"] - x["a"].mean()) ** 2).mean().item()
    assert table.shape == (2, 2)
    assert table[1, 0].item() == pytest.approx(1 - mse / (var + 1e-6), rel=1e-5)


def test_cross_r2_matrix_per_dimension_variant():
    torch.manual_seed(1)
    usae = UniversalSAE(UniversalSAEConfig({"a": 4, "b": 3}, 8, k=2))
    x = {"a": torch.randn(20, 4) + torch.tensor([0.0, 3.0, -3.0, 1.0]), "b": torch.randn(20, 3)}
    glob, per_dim = cross_r2_matrix(usae, x), cross_r2_matrix(usae, x, per_dimension=True)
    usae.eval()
    with torch.no_grad():
        x_hat = usae("a", x["a"]).x_hat["a"]
    # Entry [a, a] by hand: 1 - sum((x - x_hat)^2) / sum((x - column means)^2).
    sse = ((x["a"] - x_hat) ** 2).sum().item()
    sst = ((x["a"] - x["a"].mean(0)) ** 2).sum().item()
    assert per_dim[0, 0].item() == pytest.approx(1 - sse / sst, rel=1e-5)
    # Columns with different means: the per-dimension denominator is smaller, so that R^2 is lower.
    assert per_dim[0, 0] < glob[0, 0]


def test_training_r2_matrix_averages_logged_entries():
    history = [{"r2/a->a": 0.5, "r2/a->b": 0.1}, {"r2/a->a": 0.7, "r2/a->b": 0.3}, {"r2/b->a": 0.2}]
    table = training_r2_matrix(history, ["a", "b"])
    assert table[0].tolist() == pytest.approx([0.6, 0.2])
    assert table[1, 0].item() == pytest.approx(0.2)
    assert math.isnan(table[1, 1].item())


def test_bad_codes_are_named():
    with pytest.raises(ValueError, match="at least 2 models"):
        cofire_counts([torch.zeros(2, 3)])
    with pytest.raises(ValueError, match="one shape"):
        cofire_counts([torch.zeros(2, 3), torch.zeros(3, 3)])
    with pytest.raises(ValueError, match=r"\(n, m\)"):
        fire_counts(torch.zeros(3))
