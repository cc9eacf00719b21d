"""The options every architecture shares (see SAEConfig), each checked on every standard architecture."""

from __future__ import annotations

import torch

from saebench.sae.init import geometric_median


def _train_step(sae, x: torch.Tensor, lr: float = 0.1) -> None:
    """One SGD step on the reconstruction error with the decoder constraint applied as the trainer does."""
    sae.train()
    sae.zero_grad()
    out = sae(x)
    (out.x_hat - x).square().mean().backward()
    sae.remove_parallel_decoder_grad()
    with torch.no_grad():
        for p in sae.parameters():
            if p.grad is not None:
                p -= lr * p.grad
    sae.normalize_decoder_rows()


def test_parallel_gradient_removal_leaves_gradients_orthogonal_to_rows(make_sae, architecture):
    sae = make_sae(architecture)
    x = torch.randn(64, sae.d_in)
    (sae(x).x_hat - x).square().mean().backward()
    raw = sae.W_dec.grad.clone()
    sae.remove_parallel_decoder_grad()
    rows = sae.W_dec / sae.W_dec.norm(dim=1, keepdim=True)
    parallel_before = (raw * rows).sum(dim=1)
    parallel_after = (sae.W_dec.grad * rows).sum(dim=1)
    assert parallel_before.abs().max() > 1e-4, "the raw gradient had no parallel part to remove"
    # float32 projection: what remains is rounding, ~1e-7 of the row gradient's size
    assert parallel_after.abs().max() <= 1e-6 * raw.norm(dim=1).max()
    # the orthogonal part is untouched
    torch.testing.assert_close(sae.W_dec.grad, raw - parallel_before[:, None] * rows)


def test_unit_norm_decoder_is_kept_through_training_steps(make_sae, architecture):
    sae = make_sae(architecture, normalize_decoder=True)
    for _ in range(3):
        _train_step(sae, torch.randn(64, sae.d_in))
    torch.testing.assert_close(sae.W_dec.norm(dim=1), torch.ones(sae.n_latents))


def test_unconstrained_decoder_is_left_alone(make_sae, architecture):
    sae = make_sae(architecture, normalize_decoder=False)
    x = torch.randn(64, sae.d_in)
    (sae(x).x_hat - x).square().mean().backward()
    raw = sae.W_dec.grad.clone()
    sae.remove_parallel_decoder_grad()
    assert torch.equal(sae.W_dec.grad, raw)
    _train_step(sae, x, lr=1.0)
    assert (sae.W_dec.norm(dim=1) - 1).abs().max() > 1e-3


def test_encoder_initialised_as_a_copy_of_the_decoder_transpose(make_sae, architecture):
    sae = make_sae(architecture, encoder_init_from_decoder=True)
    assert torch.equal(sae.W_enc, sae.W_dec.t())
    with torch.no_grad():
        sae.W_dec.add_(1.0)
    assert not torch.equal(sae.W_enc, sae.W_dec.t()), "W_enc must be a copy, not a view of W_dec"


def test_encoder_initialised_independently(make_sae, architecture):
    sae = make_sae(architecture, encoder_init_from_decoder=False)
    assert not torch.allclose(sae.W_enc, sae.W_dec.t())


def test_decoder_bias_initialisation_from_a_sample(make_sae, architecture):
    sae = make_sae(architecture)
    sae.set_input_normalization(torch.linspace(-1.0, 1.0, sae.d_in), 2.0)
    sample = torch.randn(200, sae.d_in) * 3 + 1
    sample[:10] += 100.0  # outliers pull the mean, barely the median
    normalised = (sample - torch.linspace(-1.0, 1.0, sae.d_in)) / 2.0
    sae.init_decoder_bias(sample, method="mean")
    torch.testing.assert_close(sae.b_dec, normalised.mean(dim=0))
    sae.init_decoder_bias(sample, method="geometric_median")
    torch.testing.assert_close(sae.b_dec, geometric_median(normalised))
    bulk = normalised[10:].mean(0)
    assert (sae.b_dec - bulk).norm() < (normalised.mean(0) - bulk).norm(), "the median resists the outliers"


def test_pre_encoder_bias_is_subtracted_before_encoding(make_sae, architecture):
    x = torch.randn(16, 8)
    outputs = {}
    for flag in (True, False):
        sae = make_sae(architecture, seed=4, pre_encoder_bias=flag)
        with torch.no_grad():
            sae.b_dec.normal_()
        shift = sae.b_dec if flag else torch.zeros_like(sae.b_dec)
        torch.testing.assert_close(sae.pre_activation(x), (x - shift) @ sae.W_enc + sae.b_enc)
        outputs[flag] = sae(x).pre_codes
    assert not torch.allclose(outputs[True], outputs[False])


def test_tied_weights_share_the_decoder(make_sae, architecture):
    sae = make_sae(architecture, tied=True)
    assert "W_enc" not in dict(sae.named_parameters())
    torch.testing.assert_close(sae.pre_activation(torch.eye(8)), sae.W_dec.t() - sae.b_dec @ sae.W_dec.t()
                               + sae.b_enc)
    x = torch.randn(64, sae.d_in)
    before = sae(x).pre_codes
    _train_step(sae, x)
    assert not torch.allclose(sae(x).pre_codes, before), "training the decoder must move the tied encoder"


def test_without_decoder_bias_b_dec_is_a_zero_buffer(make_sae, architecture):
    sae = make_sae(architecture, decoder_bias=False, pre_encoder_bias=False)
    assert "b_dec" not in dict(sae.named_parameters())
    assert torch.equal(sae.b_dec, torch.zeros(sae.d_in))
    _train_step(sae, torch.randn(64, sae.d_in))
    assert torch.equal(sae.b_dec, torch.zeros(sae.d_in))
