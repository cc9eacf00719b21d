"""Relaxed Archetypal SAE: the relaxed-hull constraint, parity with overcomplete's RA-SAE, save/load."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from saebench.sae import create_sae, load_sae, save_sae
from saebench.sae.archetypal import ArchetypalSAE, kmeans_candidates
from saebench.train import TrainConfig, train_sae

D_IN, N_LATENTS, N_CANDIDATES, K = 6, 8, 12, 2


def build(seed: int = 0, **overrides) -> ArchetypalSAE:
    torch.manual_seed(seed)
    config = {"d_in": D_IN, "n_latents": N_LATENTS, "k": K, "n_candidates": N_CANDIDATES, **overrides}
    sae = create_sae("archetypal", **config)
    sae.set_candidates(torch.randn(N_CANDIDATES, D_IN))
    return sae


def test_atoms_start_at_the_candidates():
    sae = build()
    # W = identity and Relax = 0, multiplier 0: atom i is candidate i
    torch.testing.assert_close(sae.W_dec, sae.C[:N_LATENTS])


def test_atoms_stay_in_the_relaxed_hull_after_training():
    sae = build(delta=0.3)
    x = torch.randn(512, D_IN)
    # a large learning rate pushes W off the simplex and Relax out of the ball before each projection
    train_sae(
        sae,
        [x[i : i + 64] for i in range(0, 512, 64)] * 4,
        TrainConfig(total_steps=32, lr=0.1, progress=False),
    )
    w = sae.W.detach()
    assert (w >= 0).all()
    torch.testing.assert_close(
        w.sum(dim=1), torch.ones(N_LATENTS)
    )  # rows on the simplex (eps 1e-8 in the sum)
    assert (sae.Relax.detach().norm(dim=1) <= 0.3 + 1e-6).all()  # float rounding of the rescale
    assert float(sae.multiplier.detach()) != 0.0  # the multiplier was trained (use_multiplier=True)
    hull_part = sae.W_dec.detach() / torch.exp(sae.multiplier.detach()) - sae.Relax.detach()
    torch.testing.assert_close(hull_part, w @ sae.C)  # atoms = convex combination + relaxation, rescaled
    assert not torch.equal(w, torch.eye(N_LATENTS, N_CANDIDATES))  # training moved the weights


def test_projection_by_hand():
    sae = build(delta=1.0)
    with torch.no_grad():
        sae.W.zero_()
        sae.W[0, :3] = torch.tensor([2.0, -1.0, 2.0])  # relu -> (2, 0, 2), sum 4 -> (0.5, 0, 0.5)
        sae.Relax.zero_()
        sae.Relax[0, :2] = torch.tensor([3.0, 4.0])  # norm 5 > delta 1 -> scaled by 1/5 -> (0.6, 0.8)
    sae.project_dictionary()
    torch.testing.assert_close(sae.W[0, :3].detach(), torch.tensor([0.5, 0.0, 0.5]))
    torch.testing.assert_close(sae.Relax[0, :2].detach(), torch.tensor([0.6, 0.8]))


class _LinearReLUEncoder(nn.Module):
    """overcomplete's encoder contract ``x -> (pre_codes, relu(pre_codes))``, with given weights."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor):
        super().__init__()
        self.weight, self.bias = weight, bias

    def forward(self, x):
        pre = x @ self.weight + self.bias
        return pre, torch.relu(pre)


def test_parity_with_overcomplete_ratopk(overcomplete):
    """Same candidates, same (unprojected) W/Relax/multiplier, same linear encoder: overcomplete's
    training-mode dictionary (it projects, then combines) equals ours after one projection, and so do codes
    and reconstructions.
    Options that coincide: linear encoder, no decoder bias (ours is zero and never trained here)."""
    sae = build(seed=1, delta=0.5, use_multiplier=True)
    with torch.no_grad():
        sae.W.normal_()
        sae.Relax.normal_()
        sae.multiplier.fill_(0.3)
        sae.b_enc.normal_(0.0, 0.1)
    from overcomplete.sae import RATopKSAE

    peer = RATopKSAE(
        D_IN,
        N_LATENTS,
        points=sae.C.clone(),
        top_k=K,
        delta=0.5,
        encoder_module=_LinearReLUEncoder(sae.W_enc.detach(), sae.b_enc.detach()),
    )
    with torch.no_grad():
        peer.dictionary.W.copy_(sae.W)
        peer.dictionary.Relax.copy_(sae.Relax)
        peer.dictionary.multiplier.fill_(0.3)
    peer.train()
    peer_dictionary = peer.get_dictionary().detach()
    sae.project_dictionary()
    torch.testing.assert_close(sae.W_dec.detach(), peer_dictionary)
    x = torch.randn(20, D_IN)
    _, peer_codes, peer_x_hat = peer(x)
    out = sae(x)
    torch.testing.assert_close(out.codes.detach(), peer_codes.detach())
    torch.testing.assert_close(out.x_hat.detach(), peer_x_hat.detach())


def test_nonlinear_encoder_and_save_load(tmp_path):
    sae = build(encoder_hidden=16)
    assert sae.encoder[0].in_features == D_IN  # the nonlinear branch exists
    x = torch.randn(5, D_IN)
    path = save_sae(sae, tmp_path / "ra")
    loaded = load_sae(path, architecture="archetypal")
    torch.testing.assert_close(loaded(x).x_hat, sae(x).x_hat)
    assert "W_dec" not in sae.state_dict()  # computed, not stored
    assert (sae(x).codes != 0).sum(dim=1).max() <= K


def test_kmeans_candidates_find_separated_clusters():
    torch.manual_seed(0)
    centres = torch.tensor([[10.0, 0.0], [-10.0, 0.0]])
    x = torch.cat([centres[0] + 0.1 * torch.randn(50, 2), centres[1] + 0.1 * torch.randn(50, 2)])
    found = kmeans_candidates(x, 2, seed=0)
    found = found[found[:, 0].argsort(descending=True)]
    # each centroid is a mean of 50 points with std 0.1: its error is ~0.014 per coordinate, 0.1 is > 7 sigma
    torch.testing.assert_close(found, centres, atol=0.1, rtol=0)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"n_candidates": N_LATENTS - 1}, "n_candidates"),
        ({"normalize_decoder": True}, "normalize_decoder"),
        ({"delta": -1.0}, "delta"),
        ({"encoder_hidden": -2}, "encoder_hidden"),
    ],
)
def test_bad_config(overrides, message):
    with pytest.raises(ValueError, match=message):
        create_sae(
            "archetypal", **{"d_in": D_IN, "n_latents": N_LATENTS, "k": K, "n_candidates": 12, **overrides}
        )


def test_bad_candidates():
    sae = build()
    with pytest.raises(ValueError, match="shape"):
        sae.set_candidates(torch.randn(3, D_IN))
    with pytest.raises(ValueError, match="NaN"):
        sae.set_candidates(torch.full((N_CANDIDATES, D_IN), float("nan")))
    with pytest.raises(ValueError, match="n_clusters"):
        kmeans_candidates(torch.randn(4, 2), 5)
