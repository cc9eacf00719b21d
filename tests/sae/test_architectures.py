"""What each architecture's activation computes, on hand-made pre-activations, and its training-time state."""

from __future__ import annotations

import math

import pytest
import torch

from saebench.sae import BatchTopKSAE, JumpReLUSAE, ReLUSAE, TopKSAE, available_architectures
from saebench.sae.jumprelu import jumprelu, step_ste

PRE = torch.tensor([[3.0, 2.5, 2.0, 0.5], [1.0, 4.0, -2.0, 0.0]])


def test_standard_architectures_are_registered():
    assert {"relu", "topk", "batchtopk", "jumprelu"} <= set(available_architectures())


def test_relu_codes(make_sae):
    sae = make_sae("relu", n_latents=4)
    assert isinstance(sae, ReLUSAE)
    assert torch.equal(sae.activation(PRE), torch.tensor([[3.0, 2.5, 2.0, 0.5], [1.0, 4.0, 0.0, 0.0]]))


def test_topk_keeps_k_largest_per_row_then_relu(make_sae):
    sae = make_sae("topk", n_latents=4, k=2)
    assert isinstance(sae, TopKSAE)
    pre = torch.tensor([[3.0, -1.0, 2.0, 0.5], [-2.0, -3.0, -1.0, 0.5]])
    # row 0: the two largest are 3 and 2; row 1: 0.5 and -1, and ReLU zeroes -1 (fewer than k non-zeros)
    assert torch.equal(sae.activation(pre), torch.tensor([[3.0, 0.0, 2.0, 0.0], [0.0, 0.0, 0.0, 0.5]]))


def test_topk_gradient_reaches_only_kept_latents(make_sae):
    sae = make_sae("topk", n_latents=4, k=2)
    pre = torch.tensor([[3.0, -1.0, 2.0, 0.5]], requires_grad=True)
    sae.activation(pre).sum().backward()
    assert torch.equal(pre.grad, torch.tensor([[1.0, 0.0, 1.0, 0.0]]))


def test_batchtopk_training_keeps_k_times_rows_over_the_batch_and_sets_threshold(make_sae):
    sae = make_sae("batchtopk", n_latents=4, k=2, threshold_momentum=0.9)
    assert isinstance(sae, BatchTopKSAE)
    assert torch.isnan(sae.threshold), "the threshold starts as 'not estimated'"
    # k * B = 4 largest of the flattened batch: 4, 3, 2.5, 2 -> row 0 keeps 3 latents, row 1 keeps one
    codes = sae.train().activation(PRE)
    assert torch.equal(codes, torch.tensor([[3.0, 2.5, 2.0, 0.0], [0.0, 4.0, 0.0, 0.0]]))
    assert sae.threshold.item() == 2.0, "first update: the smallest kept value"
    # second batch: the kept values are 5, 0, 0, 0 (ReLU of 5, 0, 0, 0), so t = 0 and
    # threshold = 0.9 * 2 + 0.1 * 0 = 1.8
    sae.activation(torch.tensor([[5.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, -1.0]]))
    assert sae.threshold.item() == pytest.approx(1.8, rel=1e-6)  # float32 rounding of 0.9 * 2


def test_batchtopk_eval_uses_threshold_and_leaves_it_alone(make_sae):
    sae = make_sae("batchtopk", n_latents=4, k=2)
    with torch.no_grad():
        sae.threshold.fill_(1.8)
    sae.eval()
    codes = sae.activation(torch.tensor([[1.9, 1.7, 3.0, -1.0], [1.8, 0.0, -5.0, 100.0]]))
    assert torch.equal(codes, torch.tensor([[1.9, 0.0, 3.0, 0.0], [1.8, 0.0, 0.0, 100.0]]))
    assert sae.threshold.item() == pytest.approx(1.8)


def test_batchtopk_eval_with_zero_threshold_is_relu(make_sae):
    sae = make_sae("batchtopk", n_latents=4, k=2).eval()
    with torch.no_grad():
        sae.threshold.zero_()
    assert torch.equal(sae.activation(PRE), torch.relu(PRE))


def test_batchtopk_counts_every_leading_dimension_as_rows(make_sae):
    sae = make_sae("batchtopk", k=3).train()
    codes = sae(torch.randn(2, 5, sae.d_in)).codes
    assert codes.shape == (2, 5, sae.n_latents)
    # k * B = 3 * 10 kept out of 320; about half the random pre-activations are positive, so all 30 are > 0
    assert (codes != 0).sum().item() == 3 * 10


def test_jumprelu_codes(make_sae):
    sae = make_sae("jumprelu", n_latents=4, initial_threshold=1.0)
    assert isinstance(sae, JumpReLUSAE)
    assert torch.allclose(sae.threshold, torch.ones(4))
    # pre * H(pre - 1), H(0) = 0
    pre = torch.tensor([[3.0, 1.0, 0.5, -2.0], [1.5, 4.0, 0.99, 1.01]])
    assert torch.equal(sae.activation(pre), torch.tensor([[3.0, 0.0, 0.0, 0.0], [1.5, 4.0, 0.0, 1.01]]))


def test_jumprelu_ste_gradients_match_the_rectangle_kernel_formula():
    """One latent, theta = 1, eps = 0.5: K((z - theta) / eps) = 1 where |z - 1| < 0.25.

    z = [1.125, 0.875, 1.5, 0.5] -> u = (z - 1) / 0.5 = [0.25, -0.25, 1.0, -1.0] -> K = [1, 1, 0, 0].
    With upstream gradients g = [1, 2, 3, 4]:
      d codes / d z   = g * H(z - theta)              = [1, 0, 3, 0]
      d codes / d theta = -(theta / eps) sum K * g    = -(1 / 0.5) * (1 + 2) = -6
      d H / d theta     = -(1 / eps) sum K * g        = -(1 / 0.5) * (1 + 2) = -6 (same, as theta = 1)
    and with theta = 2, z shifted by +1: d codes / d theta = -(2 / 0.5) * 3 = -12, d H / d theta = -6.
    """
    g = torch.tensor([[1.0], [2.0], [3.0], [4.0]])
    for theta_value, expected_jump, expected_step in ((1.0, -6.0, -6.0), (2.0, -12.0, -6.0)):
        z = (torch.tensor([[1.125], [0.875], [1.5], [0.5]]) + (theta_value - 1.0)).requires_grad_()
        theta = torch.tensor([theta_value], requires_grad=True)
        (jumprelu(z, theta, 0.5) * g).sum().backward()
        assert torch.equal(z.grad, torch.tensor([[1.0], [0.0], [3.0], [0.0]]))
        assert theta.grad.item() == expected_jump
        z.grad, theta.grad = None, None
        (step_ste(z, theta, 0.5) * g).sum().backward()
        assert theta.grad.item() == expected_step
        assert z.grad is None or torch.equal(z.grad, torch.zeros_like(z)), "the step passes no gradient to z"


def test_jumprelu_log_threshold_gradient_is_chain_rule_through_exp(make_sae):
    """d/d log_theta = theta * d/d theta. theta = 2, eps = 0.5, one code in the window, upstream gradient 1:
    d/d theta = -(theta / eps) * 1 = -4, so d/d log_theta = 2 * -4 = -8."""
    sae = make_sae("jumprelu", d_in=1, n_latents=1, initial_threshold=2.0, bandwidth=0.5,
                   pre_encoder_bias=False)
    with torch.no_grad():
        sae.W_enc.fill_(1.0)
        sae.b_enc.zero_()
    codes = sae(torch.tensor([[2.1], [3.0]])).codes  # pre = x: only 2.1 is within eps/2 = 0.25 of theta
    codes.sum().backward()
    assert sae.log_threshold.grad.item() == pytest.approx(-8.0, rel=1e-6)  # exp(log 2) is 2 to float rounding


def test_jumprelu_differentiable_l0_counts_active_latents(make_sae):
    sae = make_sae("jumprelu", n_latents=4, initial_threshold=1.0)
    pre = torch.tensor([[3.0, 1.0, 0.5, -2.0], [1.5, 4.0, 0.99, 1.01]])
    assert torch.equal(sae.differentiable_l0(pre), torch.tensor([1.0, 3.0]))


@pytest.mark.parametrize("architecture", ["relu", "topk", "jumprelu"])
def test_token_shaped_inputs(make_sae, architecture):
    """(batch, tokens, d_in) inputs give (batch, tokens, n_latents) codes equal to the flattened rows'."""
    sae = make_sae(architecture)
    x = torch.randn(3, 5, sae.d_in)
    out = sae(x)
    flat = sae(x.reshape(15, sae.d_in))
    assert out.codes.shape == (3, 5, sae.n_latents) and out.x_hat.shape == x.shape
    # 1e-6: a 3-D matmul may sum in another order than the 2-D one
    torch.testing.assert_close(out.codes.reshape(15, -1), flat.codes, rtol=0, atol=1e-6)


def test_jumprelu_initial_threshold_is_stored_as_log(make_sae):
    sae = make_sae("jumprelu", initial_threshold=0.05)
    assert torch.allclose(sae.log_threshold, torch.full((sae.n_latents,), math.log(0.05)))


def test_bfloat16_autocast_forward_and_backward(make_sae, architecture):
    """Mixed precision: the matmuls run in bfloat16, and finite gradients reach the float32 master weights."""
    sae = make_sae(architecture)
    x = torch.randn(32, sae.d_in)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = sae(x)
        loss = (out.x_hat.float() - x).square().mean()
    assert torch.isfinite(out.codes).all()
    loss.backward()
    for name, p in sae.named_parameters():
        assert p.grad is not None and p.grad.dtype == torch.float32 and torch.isfinite(p.grad).all(), name
    if architecture == "batchtopk":
        assert sae.threshold.dtype == torch.float32 and torch.isfinite(sae.threshold)
