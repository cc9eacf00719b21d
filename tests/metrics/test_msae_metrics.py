"""MSAE-specific metrics (msae.md §2.5, §2.8, §2.9, §4.7), each checked by hand on a small input."""

from __future__ import annotations

import pytest
import torch

from saebench.metrics.msae import (
    authors_sweep_ks,
    dead_latent_count,
    decoder_orthogonality,
    encoder_alignment,
    full_codes,
    normalized_mae_per_sample,
    progressive_topk_sweep,
)
from saebench.sae import create_sae


def test_normalized_mae_by_hand():
    x = torch.tensor([[1.0, -3.0], [2.0, 2.0]])
    x_hat = torch.tensor([[1.0, -1.0], [2.0, 2.0]])
    # row 0: mean|e| = 1, mean|x| = 2 -> 0.5; row 1 exact -> 0
    assert normalized_mae_per_sample(x, x_hat).tolist() == [0.5, 0.0]
    with pytest.raises(ValueError, match="all-zero"):
        normalized_mae_per_sample(torch.zeros(1, 2), torch.zeros(1, 2))


def test_decoder_orthogonality_by_hand():
    # rows (1, 0), (0.6, 0.8), (0, 1): off-diagonal Gram entries 0.6, 0, 0.8 (each twice);
    # sum of squares 2 * (0.36 + 0.64) = 2 over 3 x 3 = 9 entries.
    w = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
    assert decoder_orthogonality(w) == pytest.approx(2 / 9)
    assert decoder_orthogonality(torch.eye(3)) == 0.0


def test_dead_latent_count_and_sweep_ks():
    codes = torch.tensor([[0.0, 1.0, 0.0], [0.0, 2.0, 0.5]])
    assert dead_latent_count(codes) == 1
    assert authors_sweep_ks(100) == (16, 32, 64, 100)
    assert authors_sweep_ks(64) == (16, 32, 64)


def _identity_sae(architecture: str, **fields):
    sae = create_sae(architecture, d_in=3, n_latents=3, **fields)
    with torch.no_grad():
        sae.W_enc.copy_(torch.eye(3))
        sae.W_dec.copy_(torch.eye(3))
    return sae


def test_full_codes_are_relu_without_topk():
    x = torch.tensor([[3.0, -1.0, 2.0]])
    assert full_codes(_identity_sae("topk", k=1), x).tolist() == [[3.0, 0.0, 2.0]]
    capped = _identity_sae("matryoshka", k_levels=(1, 3), soft_cap=2.0)
    assert torch.allclose(full_codes(capped, x), 2.0 * torch.tanh(torch.tensor([[1.5, 0.0, 1.0]])))


def test_progressive_sweep_by_hand():
    # identity SAE: full codes (3, 0, 2); k = 1 keeps 3 -> x_hat (3, 0, 0); k = 3 is exact.
    sae = _identity_sae("topk", k=1)
    x = torch.tensor([[3.0, 0.0, 2.0]])
    sweep = progressive_topk_sweep(sae, x, (1, 3))
    # k = 1: error (0, 0, 2): Var_d = 4/3 / Var_d(x) = 7/3 -> 4/7; MAE (2/3) / (5/3) = 0.4;
    # cos = 9 / (3 * sqrt(13)); 2 of 3 latents are zero
    assert sweep[1]["fvu"][0] == pytest.approx(4 / 7)
    assert sweep[1]["mae"][0] == pytest.approx(0.4)
    assert sweep[1]["cs"][0] == pytest.approx(3 / 13**0.5)
    assert sweep[1]["sparsity"] == pytest.approx(2 / 3)
    assert sweep[3]["fvu"][0] == pytest.approx(0.0, abs=1e-12)  # exact reconstruction
    with pytest.raises(ValueError, match="every k"):
        progressive_topk_sweep(sae, x, (4,))


def test_encoder_alignment_matches_permuted_columns():
    a = _identity_sae("topk", k=1)
    b = _identity_sae("topk", k=1)
    with torch.no_grad():
        b.W_enc.copy_(torch.eye(3)[:, [2, 0, 1]] * 5.0)  # permuted and rescaled: same directions
    assert encoder_alignment(a, b).mean_cosine == pytest.approx(1.0)
