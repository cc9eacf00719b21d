"""Each loss against values computed by hand on a tiny input (d_in = 2, n_latents = 3)."""

from __future__ import annotations

import math

import pytest
import torch

from saebench.sae import SAEOutput, create_sae
from saebench.train import losses
from saebench.train.losses import (
    default_loss,
    jumprelu_l0_loss,
    mse_loss,
    register_default_loss,
    relu_l1_loss,
)

X = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
X_HAT = torch.tensor([[1.0, 1.0], [2.0, 4.0]])  # errors 0, 1, 1, 0
CODES = torch.tensor([[1.0, 0.0, -2.0], [0.0, 3.0, 0.0]])
# decoder rows with norms 1, 2, 0.5
W_DEC = torch.tensor([[1.0, 0.0], [0.0, 2.0], [0.3, 0.4]])


def _tiny(architecture: str = "relu", **config):
    sae = create_sae(architecture, d_in=2, n_latents=3, normalize_decoder=False, **config)
    with torch.no_grad():
        sae.W_dec.copy_(W_DEC)
    return sae


def _out(codes: torch.Tensor = CODES, pre: torch.Tensor | None = None) -> SAEOutput:
    return SAEOutput(pre_codes=codes if pre is None else pre, codes=codes, x_hat=X_HAT)


def test_mse_is_the_mean_over_elements():
    loss, logs = mse_loss(X, _out(), _tiny())
    assert loss.item() == 0.5  # (0 + 1 + 1 + 0) / 4
    assert logs == {"loss": 0.5, "mse": 0.5}


def test_mse_is_measured_in_the_normalised_space():
    sae = _tiny()
    sae.set_input_normalization(10.0, 2.0)
    loss, _ = mse_loss(X, _out(), sae)
    assert loss.item() == 0.125  # errors / 2 -> 0, 0.5, 0.5, 0 -> squares 0.25 + 0.25 over 4 elements


def test_relu_l1_unweighted():
    loss_fn = relu_l1_loss(0.1)
    loss, logs = loss_fn(X, _out(), _tiny())
    # L1 per row: |1| + |0| + |-2| = 3 and 3 -> mean 3; loss = 0.5 + 0.1 * 3 = 0.8
    assert logs["l1"] == 3.0 and logs["mse"] == 0.5
    assert loss.item() == pytest.approx(0.8, rel=1e-7)  # float32 of 0.1 * 3
    assert logs["loss"] == loss.item()


def test_relu_l1_weighted_by_decoder_norm():
    loss_fn = relu_l1_loss(0.1, weight_by_decoder_norm=True)
    loss, logs = loss_fn(X, _out(), _tiny())
    # row 0: 1 * 1 + 2 * 0.5 = 2; row 1: 3 * 2 = 6 -> mean 4; loss = 0.5 + 0.1 * 4 = 0.9
    assert logs["l1"] == pytest.approx(4.0, rel=1e-7)  # float32 norm of (0.3, 0.4)
    assert loss.item() == pytest.approx(0.9, rel=1e-6)


def test_weighted_l1_sends_gradient_to_the_decoder_norms():
    sae = _tiny()
    loss, _ = relu_l1_loss(1.0, weight_by_decoder_norm=True)(X, _out(), sae)
    loss.backward()
    # d/dW_dec[j] of mean_rows(sum_j |z_j| ||W_j||) = (mean_rows |z_j|) * W_j / ||W_j||;
    # mean |z| = [0.5, 1.5, 1.0]; the MSE term does not involve W_dec here (x_hat is given)
    expected = torch.tensor([0.5, 1.5, 1.0])[:, None] * W_DEC / W_DEC.norm(dim=1, keepdim=True)
    torch.testing.assert_close(sae.W_dec.grad, expected)


def test_jumprelu_l0_counts_latents_above_threshold():
    sae = _tiny("jumprelu", initial_threshold=1.0, bandwidth=0.5)
    pre = torch.tensor([[0.5, 2.0, 0.0], [3.0, 1.2, 1.5]])
    loss, logs = jumprelu_l0_loss(0.1)(X, _out(pre=pre), sae)
    # H(pre - 1): [0, 1, 0] and [1, 1, 1] -> counts 1 and 3 -> mean 2; loss = 0.5 + 0.1 * 2 = 0.7
    assert logs["l0"] == 2.0
    assert loss.item() == pytest.approx(0.7, rel=1e-7)


def test_jumprelu_l0_gradient_reaches_thresholds_through_the_step_ste():
    sae = _tiny("jumprelu", initial_threshold=1.0, bandwidth=0.5)
    pre = torch.tensor([[0.9, 2.0, 0.0], [3.0, 1.2, 1.5]], requires_grad=True)
    loss, _ = jumprelu_l0_loss(1.0)(X, _out(pre=pre), sae)
    loss.backward()
    # window |pre - 1| < 0.25: latent 0 row 0 (0.9), latent 1 row 1 (1.2). dL0/dtheta_j = -(1/eps) * count_j
    # / 2 rows; d/dlog_theta = theta * that = 1 * -(2 * 1 / 2) = -1 for latents 0 and 1, 0 for latent 2
    torch.testing.assert_close(sae.log_threshold.grad, torch.tensor([-1.0, -1.0, 0.0]))
    assert pre.grad is None or torch.equal(pre.grad, torch.zeros_like(pre))


def test_jumprelu_l0_thresholds_pre_activations_after_relu():
    """theta = 0.1 < eps / 2 = 0.25: the window |z - 0.1| < 0.25 holds z = 0, so a negative pre-activation,
    which ReLU maps to 0, counts in it. pre = [-1, 0.2, 2] -> z = [0, 0.2, 2]: latents 0 and 1 in the window,
    dL0/dtheta = -(1 / 0.5) = -2 each, d/dlog_theta = 0.1 * -2 = -0.2."""
    sae = _tiny("jumprelu", initial_threshold=0.1, bandwidth=0.5)
    loss, logs = jumprelu_l0_loss(1.0)(X, _out(pre=torch.tensor([[-1.0, 0.2, 2.0]])), sae)
    assert logs["l0"] == 2.0  # 0.2 and 2 exceed 0.1
    loss.backward()
    torch.testing.assert_close(sae.log_threshold.grad, torch.tensor([-0.2, -0.2, 0.0]))


def test_jumprelu_l0_needs_learned_thresholds():
    with pytest.raises(TypeError, match="'relu' SAE"):
        jumprelu_l0_loss(0.1)(X, _out(), _tiny())


def test_factories_have_readable_names():
    assert relu_l1_loss(0.5, weight_by_decoder_norm=True).__name__ == (
        "relu_l1_loss(l1_coefficient=0.5, weight_by_decoder_norm=True)"
    )
    assert "jumprelu_l0_loss(l0_coefficient=0.01)" in repr(jumprelu_l0_loss(0.01))


@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf, "0.1", True])
def test_bad_coefficients(bad):
    with pytest.raises(ValueError, match="l1_coefficient"):
        relu_l1_loss(bad)
    with pytest.raises(ValueError, match="l0_coefficient"):
        jumprelu_l0_loss(bad)


def test_default_loss_by_architecture():
    relu = create_sae("relu", d_in=64, n_latents=256)
    assert default_loss(relu).__name__ == (
        f"relu_l1_loss(l1_coefficient={5 / 64!r}, weight_by_decoder_norm=True)"  # April 2024: 5 / d_in
    )
    assert default_loss(create_sae("topk", d_in=64, n_latents=256, k=8)) is mse_loss
    assert default_loss(create_sae("batchtopk", d_in=64, n_latents=256, k=8)) is mse_loss
    assert default_loss(create_sae("jumprelu", d_in=64, n_latents=256)).__name__.startswith(
        "jumprelu_l0_loss("
    )


def test_default_loss_for_an_unknown_architecture(monkeypatch):
    sae = create_sae("relu", d_in=2, n_latents=3)
    monkeypatch.setattr(type(sae), "architecture", "novel")
    with pytest.raises(ValueError, match="'novel'.*batchtopk.*jumprelu.*relu.*topk"):
        default_loss(sae)
    monkeypatch.setattr(losses, "_DEFAULT_LOSSES", dict(losses._DEFAULT_LOSSES))  # undone after the test
    register_default_loss("novel", lambda s: mse_loss)
    assert default_loss(sae) is mse_loss


def test_loss_contract_on_a_real_forward_pass():
    sae = create_sae("jumprelu", d_in=8, n_latents=32, initial_threshold=0.05)
    x = torch.randn(16, 8)
    loss, logs = default_loss(sae)(x, sae(x), sae)
    assert loss.ndim == 0 and loss.requires_grad
    assert all(isinstance(v, float) for v in logs.values()) and {"loss", "mse", "l0"} <= logs.keys()
