"""Equivariant SAE: the nonlinear-encoder TopK SAE, the group-action fit and its R², the orbit losses."""

from __future__ import annotations

import pytest
import torch

from saebench.data.orbits import OrbitWorld
from saebench.sae import create_sae, load_sae, save_sae
from saebench.sae.equivariant import (
    fit_group_action,
    group_action_r2,
    matrix_powers,
    orbit_loss,
    orbit_step,
    reconstruct_orbits,
)
from saebench.train import TrainConfig, train_sae

D, H, K, G = 8, 6, 2, 4


@pytest.fixture(scope="module")
def world() -> OrbitWorld:
    return OrbitWorld(world={"d": D, "n_atoms": 4, "k": 1}, group_order=G, seed=0)


def build(loss_type: str = "canonical", seed: int = 0, **overrides):
    torch.manual_seed(seed)
    return create_sae(
        "equivariant", d_in=D, n_latents=H, k=K, encoder_hidden=16, loss_type=loss_type, **overrides
    )


def test_mlp_topk_codes_and_save_load(tmp_path):
    torch.manual_seed(0)
    sae = create_sae("topk_mlp", d_in=D, n_latents=H, k=K, encoder_hidden=16)
    with torch.no_grad():
        sae.encoder[2].weight.normal_()  # make the nonlinear branch matter
    x = torch.randn(10, D)
    out = sae(x)
    assert ((out.codes != 0).sum(dim=1) <= K).all()
    linear_only = (sae.normalize(x) - sae.b_dec) @ sae.W_enc + sae.b_enc
    assert not torch.allclose(out.pre_codes, linear_only)  # the ReLU branch adds to the linear encoder
    loaded = load_sae(save_sae(sae, tmp_path / "mlp"), architecture="topk_mlp")
    torch.testing.assert_close(loaded(x).x_hat, out.x_hat)


def test_nonlinear_branch_starts_at_zero():
    torch.manual_seed(0)
    sae = create_sae("topk_mlp", d_in=D, n_latents=H, k=K)
    x = torch.randn(10, D)
    torch.testing.assert_close(sae.pre_activation(x), (x - sae.b_dec) @ sae.W_enc + sae.b_enc)


def test_group_action_r2_by_hand():
    # G = 2, d = 1: a_0 = (1, 2, 3), a_1 = (2, 4, 7), M = 2 -> prediction (2, 4, 6), residual 1.
    # mean(a_1) = 13/3; total = (2-13/3)^2 + (4-13/3)^2 + (7-13/3)^2 = (49 + 1 + 64)/9 = 114/9.
    orbits = torch.tensor([[[1.0], [2.0]], [[2.0], [4.0]], [[3.0], [7.0]]])
    r2 = group_action_r2(torch.tensor([[2.0]]), orbits)
    torch.testing.assert_close(r2, torch.tensor([1 - 9 / 114]))


def test_fit_recovers_the_planted_action(world):
    orbits = world.sample_orbits(256)
    matrix = fit_group_action(orbits, epochs=2)
    # noise-free orbits: exact up to float32 rounding of the least-squares start and Adam's small steps
    torch.testing.assert_close(matrix, world.M, atol=2e-3, rtol=0)
    assert (group_action_r2(matrix, world.sample_orbits(128, stream=1)) > 0.999).all()
    one_step = fit_group_action(orbits, epochs=1, all_powers=False)
    assert (group_action_r2(one_step, orbits) > 0.999).all()


def test_matrix_powers():
    m = torch.tensor([[0.0, -1.0], [1.0, 0.0]])  # 90° rotation: m^2 = -I, m^4 = I
    powers = matrix_powers(m, 4)
    torch.testing.assert_close(powers[0], torch.eye(2))
    torch.testing.assert_close(powers[2], -torch.eye(2))
    torch.testing.assert_close(m @ powers[3], torch.eye(2))


def _reference_loss(sae, orbits):
    """The docstring's formulas with explicit loops over members (row vectors: ``M^p x`` is ``x @ M^p.T``)."""
    powers = [torch.linalg.matrix_power(sae.M, p) for p in range(G)]

    def carry(x, p):
        return x @ powers[p % G].T

    pairs = []  # (target, prediction) per averaged term
    for p in range(G):
        if sae.config.loss_type == "canonical":
            pairs.append((orbits[:, p], carry(sae.decode(sae.encode(orbits[:, 0])), p)))
        elif sae.config.loss_type == "latent_inv":
            decoded = sae.decode(sae.encode(orbits[:, p]))
            pairs.extend((orbits[:, q], carry(decoded, q)) for q in range(G))
        else:
            decoded = sae.decode(sae.encode(carry(orbits[:, p], G - p)))
            pairs.append((orbits[:, p], carry(decoded, p)))
    return sum((t - y).pow(2).sum(dim=-1).mean() for t, y in pairs) / len(pairs)


@pytest.mark.parametrize("loss_type", ["canonical", "latent_inv", "output_inv"])
def test_orbit_loss_matches_loop_reference(world, loss_type):
    sae = build(loss_type)
    sae.set_group_action(world.M)
    orbits = world.sample_orbits(16)
    loss, terms, _ = orbit_loss(sae, orbits)
    torch.testing.assert_close(loss, _reference_loss(sae, orbits))
    assert terms[loss_type] == pytest.approx(float(loss.detach()))


@pytest.mark.parametrize("loss_type", ["canonical", "latent_inv", "output_inv"])
def test_orbit_loss_gradients_match_loop_reference(world, loss_type):
    """The transported dictionary (M^p applied to the atoms, not to every decoded row) must give the same
    gradients as the loop, with a non-trivial input normalisation so that the decoder's offset matters."""
    fast, slow = build(loss_type), build(loss_type)
    fast.set_group_action(world.M)
    fast.set_input_normalization(torch.linspace(-1.0, 1.0, D), 2.0)
    with torch.no_grad():
        fast.b_dec.normal_()
    slow.load_state_dict(fast.state_dict())
    orbits = world.sample_orbits(16)
    orbit_loss(fast, orbits)[0].backward()
    _reference_loss(slow, orbits).backward()
    for (name, a), b in zip(fast.named_parameters(), slow.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-5, rtol=1e-4, msg=name)


def test_group_powers_follow_changes_of_m(world):
    sae = build()
    torch.testing.assert_close(sae.group_powers(), torch.eye(D).expand(G, D, D))
    sae.set_group_action(world.M)
    torch.testing.assert_close(sae.group_powers(), matrix_powers(world.M, G))
    other = build()
    other.load_state_dict(sae.state_dict())
    torch.testing.assert_close(other.group_powers()[1], world.M)


def test_output_inv_equals_canonical_on_exact_orbits(world):
    """With the true M, mapping member p back by M^(G-p) gives member 0, so both losses coincide."""
    canonical, output_inv = build("canonical"), build("output_inv")
    output_inv.load_state_dict(canonical.state_dict())
    for sae in (canonical, output_inv):
        sae.set_group_action(world.M)
    orbits = world.sample_orbits(16)
    torch.testing.assert_close(
        orbit_loss(canonical, orbits)[0], orbit_loss(output_inv, orbits)[0], atol=1e-5, rtol=1e-5
    )


def test_lambda_mse_adds_the_plain_reconstruction(world):
    plain, mixed = build("canonical"), build("canonical", lambda_mse=0.5)
    orbits = world.sample_orbits(8)
    base, _, _ = orbit_loss(plain, orbits)
    total, terms, _ = orbit_loss(mixed, orbits)
    torch.testing.assert_close(total, base + 0.5 * torch.tensor(terms["mse"]))


def test_training_on_orbits_lowers_the_loss(world):
    sae = build("canonical")
    sae.set_group_action(world.M)
    held_out = world.sample_orbits(256, stream=2)
    before = float(orbit_loss(sae, held_out)[0].detach())
    train_sae(
        sae,
        world.orbit_batches(32, 150),
        TrainConfig(total_steps=150, lr=1e-2, progress=False),
        step_fn=orbit_step,
    )
    after = float(orbit_loss(sae, held_out)[0].detach())
    assert after < 0.5 * before
    recon = reconstruct_orbits(sae, held_out)
    assert recon.shape == held_out.shape
    torch.testing.assert_close(
        (held_out - recon).pow(2).sum(-1).mean(), torch.tensor(after), rtol=1e-4, atol=1e-6
    )


def test_bad_inputs(world):
    sae = build()
    with pytest.raises(ValueError, match="members"):
        orbit_loss(sae, torch.randn(4, 3, D))
    with pytest.raises(ValueError, match=r"\(n, G, d\)"):
        orbit_loss(sae, torch.randn(4, D))
    with pytest.raises(ValueError, match="shape"):
        sae.set_group_action(torch.eye(3))
    with pytest.raises(ValueError, match="loss_type"):
        build("nope")
    with pytest.raises(TypeError, match="EquivariantSAE"):
        orbit_step(create_sae("topk_mlp", d_in=D, n_latents=H, k=K), torch.randn(2, G, D), lambda c: c)
    with pytest.raises(ValueError, match="NaN"):
        fit_group_action(torch.full((4, G, D), float("nan")))
