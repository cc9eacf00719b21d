"""Parity with overcomplete 0.3.0: the same weights in both libraries give the same codes and reconstructions.

overcomplete's SAEs (default ``"linear"`` encoder) compute ``pre = x @ W.T + b``, have no decoder bias and no
pre-encoder bias, and use a unit-norm dictionary. So ours are configured with ``pre_encoder_bias=False``,
``decoder_bias=False`` and identity input normalisation, and both get our weights.

Tolerances. Pre-activations and codes: 1e-6, because both sides run the same float32 matmul on the same
operands and may differ only in where the bias is added (one rounding). Reconstructions: 1e-5, because
overcomplete re-normalises every dictionary row in its forward (``D / (||D|| + 1e-8)``), which perturbs each
unit-norm row by float32 rounding (~1e-7 relative), summed over up to 64 active atoms; gradients flow
back through that dictionary, so they get the same 1e-5.
"""

from __future__ import annotations

import pytest
import torch

D, H, K, B = 16, 64, 4, 32
CODE_TOL = {"rtol": 1e-6, "atol": 1e-6}
RECON_TOL = {"rtol": 1e-5, "atol": 1e-5}
PEER_CONFIG = {"pre_encoder_bias": False, "decoder_bias": False, "normalize_decoder": True}


def _copy_weights(ours, theirs) -> None:
    with torch.no_grad():
        if ours.config.tied:
            theirs.encoder.bias.copy_(ours.b_enc)
        else:
            linear = theirs.encoder.final_block[0]
            linear.weight.copy_(ours.W_enc.t())
            linear.bias.copy_(ours.b_enc)
        theirs.dictionary._weights.copy_(ours.W_dec)


def _ours(make_sae, architecture: str, **config):
    sae = make_sae(architecture, seed=1, d_in=D, n_latents=H, encoder_init_from_decoder=False, **PEER_CONFIG,
                   **config)
    with torch.no_grad():
        sae.b_enc.normal_(0.0, 0.5)  # a wide spread of biases: some latents mostly on, some mostly off
    return sae


def _assert_same_outputs(ours, theirs, x: torch.Tensor) -> None:
    out = ours(x)
    pre, codes, x_hat = theirs(x)
    torch.testing.assert_close(out.pre_codes, pre, **CODE_TOL)
    assert torch.equal(out.codes != 0, codes != 0), "different sets of active latents"
    torch.testing.assert_close(out.codes, codes, **CODE_TOL)
    torch.testing.assert_close(out.x_hat, x_hat, **RECON_TOL)


def _peer(overcomplete, architecture: str):
    if architecture == "relu":
        return overcomplete.SAE(D, H)
    if architecture == "topk":
        return overcomplete.TopKSAE(D, H, top_k=K)
    if architecture == "batchtopk":
        # overcomplete's top_k is the number kept over the whole batch: our k per row times B rows
        return overcomplete.BatchTopKSAE(D, H, top_k=K * B, threshold_momentum=0.9)
    return overcomplete.JumpSAE(D, H, kernel="rectangle", bandwidth=0.2)


OUR_CONFIG = {
    "relu": {},
    "topk": {"k": K},
    "batchtopk": {"k": K, "threshold_momentum": 0.9},
    "jumprelu": {"bandwidth": 0.2, "initial_threshold": 0.3},
}


@pytest.mark.parametrize("architecture", sorted(OUR_CONFIG))
def test_train_and_eval_outputs_match(overcomplete, make_sae, architecture):
    torch.manual_seed(2)
    ours = _ours(make_sae, architecture, **OUR_CONFIG[architecture])
    theirs = _peer(overcomplete, architecture)
    _copy_weights(ours, theirs)
    if architecture == "jumprelu":
        with torch.no_grad():
            ours.log_threshold.normal_(-1.2, 0.3)  # thresholds around 0.3, different per latent
            theirs.thresholds.copy_(ours.log_threshold)
    ours.train()
    theirs.train()
    for _ in range(3):  # BatchTopK: three updates of the running threshold
        _assert_same_outputs(ours, theirs, torch.randn(B, D))
    if architecture == "batchtopk":
        torch.testing.assert_close(ours.threshold, theirs.running_threshold, **CODE_TOL)
    ours.eval()
    theirs.eval()
    _assert_same_outputs(ours, theirs, torch.randn(B, D))


@pytest.mark.parametrize("architecture", ["relu", "topk"])
def test_tied_outputs_match(overcomplete, make_sae, architecture):
    ours = _ours(make_sae, architecture, tied=True, **OUR_CONFIG[architecture])
    theirs = _peer(overcomplete, architecture).tied(bias=True)
    _copy_weights(ours, theirs)
    _assert_same_outputs(ours, theirs, torch.randn(B, D))


def test_jumprelu_gradients_match_up_to_overcompletes_kernel_scale(overcomplete, make_sae):
    """Same encoder gradients with the rectangle kernel. The threshold pseudo-gradient differs by a known
    factor: overcomplete's ``rectangle_kernel(delta, eps)`` is ``1[|delta| <= eps/2] / eps`` (a density in
    ``delta``), and it still multiplies by ``theta / eps``, so its gradient is the paper's Eq. 11 divided by
    ``eps`` again. Some thresholds lie below eps/2 = 0.1, where the ReLU before the threshold matters."""
    torch.manual_seed(3)
    ours = _ours(make_sae, "jumprelu", **OUR_CONFIG["jumprelu"])
    theirs = _peer(overcomplete, "jumprelu")
    _copy_weights(ours, theirs)
    with torch.no_grad():
        ours.log_threshold.normal_(-2.0, 0.8)  # thresholds from ~0.03 to ~0.6
        theirs.thresholds.copy_(ours.log_threshold)
    assert (ours.threshold < 0.1).any()
    x = torch.randn(B, D)
    weights = torch.randn(B, H)  # a loss that weights each code differently: sum(codes * weights)
    (ours(x).codes * weights).sum().backward()
    (theirs(x)[1] * weights).sum().backward()
    assert ours.log_threshold.grad.abs().sum() > 0, "no code fell in the kernel window"
    bandwidth = OUR_CONFIG["jumprelu"]["bandwidth"]
    torch.testing.assert_close(ours.log_threshold.grad / bandwidth, theirs.thresholds.grad, **RECON_TOL)
    torch.testing.assert_close(ours.W_enc.grad, theirs.encoder.final_block[0].weight.grad.t(), **RECON_TOL)
    torch.testing.assert_close(ours.b_enc.grad, theirs.encoder.final_block[0].bias.grad, **RECON_TOL)


def test_l1_loss_matches_mse_l1_with_the_batch_size_folded_into_the_coefficient(overcomplete, make_sae):
    """overcomplete's ``mse_l1`` is ``mean((x - x_hat)^2) + penalty * l1(codes)`` where ``l1`` sums |z| over
    the whole batch; ours averages the per-row sum over rows. With a unit-norm decoder (so the weighting is
    moot) they agree when our coefficient is ``B`` times theirs."""
    from overcomplete.sae.losses import mse_l1

    from saebench.train.losses import relu_l1_loss

    ours = _ours(make_sae, "relu")
    x = torch.randn(B, D)
    out = ours(x)
    theirs = mse_l1(x, out.x_hat, out.pre_codes, out.codes, ours.W_dec, penalty=0.01)
    loss, _ = relu_l1_loss(0.01 * B, weight_by_decoder_norm=True)(x, out, ours)
    torch.testing.assert_close(loss, theirs, **RECON_TOL)
