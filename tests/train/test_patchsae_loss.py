"""PatchSAE's losses (paper Eq. 2 vs the authors' code), its recipe and its decoder-bias init, by hand."""

from __future__ import annotations

import pytest
import torch

from saebench.sae import create_sae
from saebench.sae.base import SAEOutput
from saebench.sae.init import geometric_median, image_geometric_median
from saebench.train.patchsae_loss import (
    init_decoder_bias_from_images,
    patchsae_loss,
    patchsae_train_config,
    summed_squared_error,
    token_norm_normalized_mse,
)

# one image, two tokens: x = [3, 4] (norm 5) and [0, 2] (norm 2)
X = torch.tensor([[[3.0, 4.0], [0.0, 2.0]]])
X_HAT = torch.tensor([[[3.0, 3.0], [1.0, 2.0]]])  # errors [0, -1] and [1, 0]
CODES = torch.tensor([[[1.0, 2.0, 0.0], [0.0, 3.0, 0.0]]])  # L1 per token: 3 and 3


def test_reconstruction_terms_by_hand():
    # code: per element (err^2 / ||x||): [0, 1/5, 1/2, 0], mean 0.7 / 4 = 0.175
    assert token_norm_normalized_mse(X, X_HAT).item() == pytest.approx(0.175)
    # paper Eq. 2: per token ||err||^2 = 1 and 1, mean 1
    assert summed_squared_error(X, X_HAT).item() == pytest.approx(1.0)


@pytest.mark.parametrize(("reconstruction", "recon"), [("code", 0.175), ("paper", 1.0)])
def test_loss_adds_the_l1_term(reconstruction, recon):
    sae = create_sae("relu", d_in=2, n_latents=3)
    out = SAEOutput(pre_codes=CODES, codes=CODES, x_hat=X_HAT)
    total, logs = patchsae_loss(0.5, reconstruction)(X, out, sae)
    # l1 = mean over tokens of sum |f| = 3; total = recon + 0.5 * 3
    assert total.item() == pytest.approx(recon + 1.5)
    assert logs == pytest.approx({"loss": recon + 1.5, "mse": recon, "l1": 3.0})


def test_loss_rejects_unknown_variants():
    with pytest.raises(ValueError, match="reconstruction"):
        patchsae_loss(reconstruction="fry")
    with pytest.raises(ValueError, match="l1_coefficient"):
        patchsae_loss(-1.0)


def test_recipe_config():
    config = patchsae_train_config(20_480, images_per_step=128, tokens_per_image=197)
    assert (config.lr, config.warmup_steps, config.schedule, config.ghost_grads) == (
        4e-4,
        500,
        "constant",
        True,
    )
    # 64 steps x 128 images x 197 tokens
    assert config.dead_window_tokens == 64 * 128 * 197 == 1_613_824
    assert patchsae_train_config(100, 2, 5).warmup_steps == 100


def test_image_geometric_median_is_the_token_mean_of_the_median_image():
    # three images (T = 2 tokens, d = 1) on one line: (0, 0), (1, 1), (5, 5). Their geometric median is the
    # middle point (1, 1), whose token mean is 1 (the coordinate mean would give (0 + 1 + 5) / 3 = 2).
    acts = torch.tensor([[[0.0], [0.0]], [[1.0], [1.0]], [[5.0], [5.0]]])
    assert image_geometric_median(acts).item() == pytest.approx(
        1.0, abs=1e-4
    )  # Weiszfeld stops within 1e-6 x scale


def test_image_geometric_median_with_one_token_is_the_plain_median():
    acts = torch.randn(20, 1, 3, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(image_geometric_median(acts), geometric_median(acts[:, 0]))
    with pytest.raises(ValueError, match="n_images, n_tokens, d"):
        image_geometric_median(acts[:, 0])


@pytest.mark.parametrize(("method", "expected"), [("image_geometric_median", 1.0), ("mean", 2.0)])
def test_init_decoder_bias_from_images(method, expected):
    # the three collinear images above: median image (1, 1) -> 1; token mean (0+0+1+1+5+5) / 6 = 2
    acts = torch.tensor([[[0.0], [0.0]], [[1.0], [1.0]], [[5.0], [5.0]]])
    sae = create_sae("relu", d_in=1, n_latents=2)
    init_decoder_bias_from_images(sae, acts, method)
    assert sae.b_dec.item() == pytest.approx(expected, abs=1e-4)  # Weiszfeld stops within 1e-6 x scale
    with pytest.raises(ValueError, match="decoder-bias init"):
        init_decoder_bias_from_images(sae, acts, "zeros")
