"""Bad input gets an error naming the problem: shapes, non-finite values, impossible configs."""

from __future__ import annotations

import math

import pytest
import torch

from saebench.sae import JumpReLUSAE, TopKSAE, TopKSAEConfig, create_sae


def test_wrong_input_width(make_sae, architecture):
    sae = make_sae(architecture)
    with pytest.raises(ValueError, match=r"shape \(\.\.\., 8\), got \(4, 7\)"):
        sae(torch.randn(4, 7))
    with pytest.raises(ValueError, match=r"shape \(\.\.\., 8\), got \(4, 7\)"):
        sae.encode(torch.randn(4, 7))
    with pytest.raises(ValueError, match=r"codes must have shape \(\.\.\., 32\)"):
        sae.decode(torch.randn(4, 31))


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_input(make_sae, architecture, bad):
    sae = make_sae(architecture)
    x = torch.randn(4, sae.d_in)
    x[2, 3] = bad
    with pytest.raises(ValueError, match="1 NaN/Inf"):
        sae(x)


@pytest.mark.parametrize("architecture", ["topk", "batchtopk"])
@pytest.mark.parametrize("k", [0, -1, 33])
def test_k_outside_the_dictionary(architecture, k):
    with pytest.raises(ValueError, match=f"k={k} with n_latents=32"):
        create_sae(architecture, d_in=8, n_latents=32, k=k)


@pytest.mark.parametrize("architecture", ["topk", "batchtopk"])
def test_k_must_be_given_as_an_int(architecture):
    with pytest.raises(TypeError, match="k"):
        create_sae(architecture, d_in=8, n_latents=32)
    with pytest.raises(TypeError, match="k must be an int"):
        create_sae(architecture, d_in=8, n_latents=32, k=2.5)


@pytest.mark.parametrize("field", ["bandwidth", "initial_threshold"])
@pytest.mark.parametrize("value", [0.0, -0.1, math.nan, math.inf])
def test_jumprelu_needs_positive_bandwidth_and_threshold(field, value):
    with pytest.raises(ValueError, match=field):
        create_sae("jumprelu", d_in=8, n_latents=32, **{field: value})


@pytest.mark.parametrize("momentum", [-0.1, 1.0, math.nan])
def test_batchtopk_momentum_range(momentum):
    with pytest.raises(ValueError, match="threshold_momentum"):
        create_sae("batchtopk", d_in=8, n_latents=32, k=2, threshold_momentum=momentum)


def test_batchtopk_eval_before_any_training_pass(make_sae):
    sae = make_sae("batchtopk").eval()
    with pytest.raises(RuntimeError, match="no inference threshold yet"):
        sae(torch.randn(4, sae.d_in))


def test_unknown_config_field_is_named():
    with pytest.raises(TypeError, match="bandwith"):
        create_sae("jumprelu", d_in=8, n_latents=32, bandwith=0.1)


def test_config_of_another_architecture_is_refused():
    config = TopKSAEConfig(d_in=8, n_latents=32, k=2)
    with pytest.raises(TypeError, match="JumpReLUSAE needs a JumpReLUSAEConfig, got TopKSAEConfig"):
        JumpReLUSAE(config)
    assert isinstance(TopKSAE(config), TopKSAE)


def test_decoder_bias_sample_of_the_wrong_width(make_sae):
    sae = make_sae("relu")
    with pytest.raises(ValueError, match=r"shape \(\.\.\., 8\), got \(10, 3\)"):
        sae.init_decoder_bias(torch.randn(10, 3))
