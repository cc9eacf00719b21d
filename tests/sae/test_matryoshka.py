"""Matryoshka SAE (MSAE, msae.md §3.3-3.5): nesting list, weights, nested codes, loss, save/load, training."""

from __future__ import annotations

import math
from itertools import pairwise

import pytest
import torch

from saebench.sae import MatryoshkaSAE, create_sae, load_sae, save_sae
from saebench.sae.matryoshka import level_weights, matryoshka_loss, nested_top_k, nesting_list, soft_cap
from saebench.train import TrainConfig, train_sae
from saebench.train.losses import default_loss


@pytest.mark.parametrize(
    ("n_latents", "expected"),
    [
        (4096, (64, 128, 256, 512, 1024, 2048, 4096)),  # 512 x 8: 7 levels (msae.md §3.3 table)
        (6144, (64, 128, 256, 512, 1024, 2048, 4096, 6144)),  # 768 x 8: m appended after 4096
        (24576, (64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 24576)),  # 768 x 32: 10 levels
        (32, (32,)),  # first_k above m: the single ReLU level
    ],
)
def test_nesting_list_matches_the_authors_table(n_latents, expected):
    assert nesting_list(n_latents) == expected


def test_reverse_weighting_gives_the_sparsest_level_the_largest_weight():
    assert level_weights(3, "rw") == (3.0, 2.0, 1.0)
    assert level_weights(3, "uw") == (1.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="choose one of"):
        level_weights(3, "reverse")


def test_nested_top_k_by_hand():
    pre = torch.tensor([[3.0, -1.0, 2.0, 0.5]])
    one, two, four = nested_top_k(pre, (1, 2, 4))
    assert one.tolist() == [[3.0, 0.0, 0.0, 0.0]]
    assert two.tolist() == [[3.0, 0.0, 2.0, 0.0]]
    assert four.tolist() == [[3.0, 0.0, 2.0, 0.5]]  # k = n_latents: ReLU of everything


def test_soft_cap_by_hand():
    z = torch.tensor([0.0, 2.0])
    assert torch.allclose(soft_cap(z, 2.0), torch.tensor([0.0, 2.0 * math.tanh(1.0)]))
    assert soft_cap(z, 0.0) is z  # 0 disables the cap


def test_forward_returns_the_inference_level_and_full_codes_are_relu():
    torch.manual_seed(0)
    sae = create_sae("matryoshka", d_in=8, n_latents=32, first_k=4)
    assert sae.k_levels == (4, 8, 16, 32)
    x = torch.randn(5, 8)
    out = sae(x)
    assert ((out.codes != 0).sum(-1) <= 4).all()
    assert torch.equal(sae.full_codes(out.pre_codes), torch.relu(out.pre_codes))
    deeper = create_sae("matryoshka", d_in=8, n_latents=32, first_k=4, inference_k=16)
    deeper.load_state_dict(sae.state_dict())
    assert ((deeper(x).codes != 0).sum(-1) <= 16).all()
    assert ((deeper(x).codes != 0).sum(-1) > 4).any()


def test_levels_are_nested():
    torch.manual_seed(1)
    sae = create_sae("matryoshka", d_in=8, n_latents=32, k_levels=[2, 6, 32])
    levels = sae.level_outputs(torch.randn(20, 8))
    for small, large in pairwise(levels):
        assert ((small.codes != 0) <= (large.codes != 0)).all()


def test_gradient_reaches_only_the_kept_latents_of_a_level():
    sae = create_sae("matryoshka", d_in=4, n_latents=8, k_levels=(2, 8))
    pre = torch.randn(3, 8, requires_grad=True)
    nested_top_k(pre, (2,))[0].sum().backward()
    kept = (pre.detach().argsort(dim=-1, descending=True).argsort(dim=-1) < 2) & (pre.detach() > 0)
    assert torch.equal(pre.grad != 0, kept)  # d relu(v)/dv = 1 on kept positive entries, 0 elsewhere
    assert len(sae.levels_from_pre(pre.detach())) == 2


def _tiny_sae(weighting: str) -> MatryoshkaSAE:
    """2 latents, identity-like weights: pre = x, levels k=1 and k=2, so the arithmetic is by hand."""
    sae = create_sae("matryoshka", d_in=2, n_latents=2, k_levels=(1, 2), weighting=weighting)
    with torch.no_grad():
        sae.W_enc.copy_(torch.eye(2))
        sae.W_dec.copy_(torch.eye(2))
    return sae


@pytest.mark.parametrize(("weighting", "expected"), [("rw", (2 * 0.5 + 1 * 0.0) / 3), ("uw", 0.5 / 2)])
def test_loss_is_the_weighted_level_mse_over_the_sum_of_weights(weighting, expected):
    # x = (2, 1): level k=1 keeps 2 -> x_hat (2, 0), mse = (0 + 1) / 2 = 0.5; level k=2 is exact, mse 0.
    sae = _tiny_sae(weighting)
    x = torch.tensor([[2.0, 1.0]])
    loss, logs = matryoshka_loss()(x, sae(x), sae)
    assert loss.item() == pytest.approx(expected)
    assert logs["level_k1"] == pytest.approx(0.5) and logs["level_k2"] == pytest.approx(0.0)


def test_nmse_divides_each_row_by_its_mean_square():
    # x = (2, 1): level k=1 error mean 0.5, mean_d x^2 = 2.5 -> 0.2; level 2 exact. UW: (0.2 + 0) / 2.
    sae = _tiny_sae("uw")
    x = torch.tensor([[2.0, 1.0]])
    loss, _ = matryoshka_loss("nmse")(x, sae(x), sae)
    assert loss.item() == pytest.approx(0.1)


def test_default_loss_is_the_matryoshka_mse_loss():
    assert default_loss(_tiny_sae("rw")).__name__ == "matryoshka_loss(reconstruction='mse')"


def test_loss_rejects_other_architectures():
    sae = create_sae("topk", d_in=2, n_latents=2, k=1)
    x = torch.ones(1, 2)
    with pytest.raises(TypeError, match="matryoshka"):
        matryoshka_loss()(x, sae(x), sae)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"k_levels": (4, 4)}, "strictly increasing"),
        ({"k_levels": (4, 64)}, "lie in"),
        ({"weighting": "xx"}, "choose one of"),
        ({"inference_k": 5, "first_k": 4}, "not one of the levels"),
        ({"soft_cap": -1.0}, "soft_cap"),
    ],
)
def test_bad_config_is_a_clear_error(fields, message):
    with pytest.raises(ValueError, match=message):
        create_sae("matryoshka", d_in=4, n_latents=32, **fields)


def test_save_load_round_trip(tmp_path):
    sae = create_sae("matryoshka", d_in=4, n_latents=16, k_levels=[2, 8, 16], weighting="uw", soft_cap=3.0)
    save_sae(sae, tmp_path / "m")
    loaded = load_sae(tmp_path / "m")
    assert loaded.config == sae.config
    x = torch.randn(3, 4)
    assert torch.equal(loaded(x).x_hat, sae(x).x_hat)


def test_training_lowers_every_level_loss():
    torch.manual_seed(0)
    atoms = torch.nn.functional.normalize(torch.randn(24, 8), dim=1)
    data = [torch.relu(torch.randn(64, 24) - 1.0) @ atoms for _ in range(150)]
    sae = create_sae("matryoshka", d_in=8, n_latents=32, k_levels=(2, 8, 32))
    result = train_sae(sae, data, TrainConfig(total_steps=150, lr=3e-3, progress=False))
    first, last = result.history[0], result.history[-1]
    for k in (2, 8, 32):
        # halving is far above step-to-step noise on this easy, noiseless data
        assert last[f"level_k{k}"] < 0.5 * first[f"level_k{k}"]
