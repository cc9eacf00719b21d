"""PatchSAE's training loss, as the paper writes it and as the authors' code computes it, and its recipe.

PatchSAE (Lim et al., ICLR 2025, Eq. 2, §A.1; patchsae.md §1.1-1.2) trains a ReLU SAE (the ``relu``
architecture) on every token of a ViT's residual stream, ``x`` of shape ``(n_images, T, d)``:

- paper, Eq. 2: ``L = ||SAE(z) - z||_2^2 + lambda ||f(z)||_1`` per token, averaged over all tokens
  (:func:`summed_squared_error`);
- code (``sparse_autoencoder.py``, from Fry 2024 / early SAELens): each element's squared error divided by
  the L2 norm (not squared) of that token's input, averaged over images x tokens x dims
  (:func:`token_norm_normalized_mse`); the L1 term is the same. With unit-scale tokens the two differ by
  about a factor ``d``, so a ``lambda`` tuned for one is not right for the other.

Both are computed in the SAE's normalised input space (identity by default, as in the authors' code). The
recipe constants and :func:`patchsae_train_config` give the rest: lr 4e-4 with 500 warm-up steps, Adam,
ghost grads with a 64-step dead window, decoder rows kept at unit norm (``SAEConfig.normalize_decoder``).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from saebench.sae.base import SAE, SAEOutput
from saebench.sae.init import geometric_median, image_geometric_median
from saebench.train.config import TrainConfig
from saebench.train.losses import LossFn, l1_penalty

__all__ = [
    "PATCHSAE_EXPANSION",
    "PATCHSAE_L1_COEFFICIENT",
    "PATCHSAE_LR",
    "PATCHSAE_WARMUP_STEPS",
    "PATCHSAE_DEAD_WINDOW_STEPS",
    "RECONSTRUCTIONS",
    "DECODER_BIAS_INITS",
    "summed_squared_error",
    "token_norm_normalized_mse",
    "patchsae_loss",
    "patchsae_train_config",
    "init_decoder_bias_from_images",
]

PATCHSAE_EXPANSION = 64
"""Latents per input dimension: 64 x 768 = 49,152 for CLIP ViT-B/16 (paper §3.1)."""

PATCHSAE_L1_COEFFICIENT = 8e-5
"""lambda_l1 of Eq. 2 (paper §A.1), used with the code's normalised MSE."""

PATCHSAE_LR = 4e-4
"""Adam learning rate (paper §A.1)."""

PATCHSAE_WARMUP_STEPS = 500
"""Steps of the "constant with warm-up" schedule, multiplier ``min(1, (step + 1) / 500)`` (paper §A.1)."""

PATCHSAE_DEAD_WINDOW_STEPS = 64
"""``dead_feature_window`` of the authors' training script: ghost grads act on latents silent for 64 steps."""

RECONSTRUCTIONS = ("code", "paper")

DECODER_BIAS_INITS = ("image_geometric_median", "geometric_median", "mean")


def summed_squared_error(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """``mean over tokens of ||x_hat - x||_2^2``: the squared error summed over the last dimension (Eq. 2)."""
    return (x_hat - x).pow(2).sum(dim=-1).mean()


def token_norm_normalized_mse(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """``mean over all elements of (x_hat - x)^2 / ||x_token||_2``: the authors' reconstruction loss.

    Each token's squared errors are divided by the (unsquared) L2 norm of that token's input, then averaged
    over every element. An all-zero token has an undefined ratio; the norm is clamped at 1e-12 (the authors'
    code has no guard).
    """
    norms = torch.linalg.vector_norm(x, dim=-1, keepdim=True).clamp_min(1e-12)
    return ((x_hat - x).pow(2) / norms).mean()


def patchsae_loss(l1_coefficient: float = PATCHSAE_L1_COEFFICIENT, reconstruction: str = "code") -> LossFn:
    """``reconstruction + l1_coefficient * l1_penalty(codes)``: ``reconstruction="code"`` uses
    :func:`token_norm_normalized_mse`, ``"paper"`` :func:`summed_squared_error`. The L1 term is the sum of
    ``|f|`` over latents averaged over tokens (both). Logs ``loss``, ``mse`` (the reconstruction term) and
    ``l1`` (before the coefficient)."""
    if reconstruction not in RECONSTRUCTIONS:
        raise ValueError(f"reconstruction must be one of {RECONSTRUCTIONS}, got {reconstruction!r}")
    is_number = isinstance(l1_coefficient, (int, float)) and not isinstance(l1_coefficient, bool)
    if not is_number or not math.isfinite(l1_coefficient) or l1_coefficient < 0:
        raise ValueError(f"l1_coefficient must be a finite number >= 0, got {l1_coefficient!r}")
    error = token_norm_normalized_mse if reconstruction == "code" else summed_squared_error

    def loss(x: torch.Tensor, out: SAEOutput, sae: SAE) -> tuple[torch.Tensor, dict[str, float]]:
        recon = error(sae.normalize(x), sae.normalize(out.x_hat))
        l1 = l1_penalty(out.codes)
        total = recon + l1_coefficient * l1
        values = torch.stack([total.detach(), recon.detach(), l1.detach()]).float().tolist()
        return total, dict(zip(("loss", "mse", "l1"), values, strict=True))

    loss.__name__ = loss.__qualname__ = f"patchsae_loss({l1_coefficient=!r}, {reconstruction=!r})"
    return loss


def patchsae_train_config(
    total_steps: int, images_per_step: int, tokens_per_image: int, **overrides: Any
) -> TrainConfig:
    """The authors' recipe as a :class:`TrainConfig`: Adam, lr 4e-4, 500 warm-up steps then constant, ghost
    grads with the 64-step dead window converted to tokens (``64 * images_per_step * tokens_per_image``).

    The warm-up is capped at ``total_steps`` for short runs. The decoder bias is left to the caller
    (``b_dec_init``, or :func:`saebench.sae.init.image_geometric_median` for the authors' variant).
    """
    settings: dict[str, Any] = {
        "total_steps": total_steps,
        "lr": PATCHSAE_LR,
        "optimizer": "adam",
        "warmup_steps": min(PATCHSAE_WARMUP_STEPS, total_steps),
        "schedule": "constant",
        "ghost_grads": True,
        "dead_window_tokens": PATCHSAE_DEAD_WINDOW_STEPS * images_per_step * tokens_per_image,
    }
    settings.update(overrides)
    return TrainConfig(**settings)


@torch.no_grad()
def init_decoder_bias_from_images(
    sae: SAE, acts: torch.Tensor, method: str = "image_geometric_median"
) -> None:
    """Set ``b_dec`` from one batch of image tokens ``(n_images, T, d)`` (the authors use the first batch).

    ``"image_geometric_median"``: the authors' (:func:`~saebench.sae.init.image_geometric_median`);
    ``"geometric_median"``: the plain median of the token rows (the paper's wording); ``"mean"``: the token
    mean (Table 2's ablation). Computed on the raw tokens: the PatchSAE recipe has no input normalisation.
    """
    if method not in DECODER_BIAS_INITS:
        raise ValueError(f"unknown decoder-bias init {method!r}; choose one of {DECODER_BIAS_INITS}")
    if acts.ndim != 3 or acts.shape[-1] != sae.d_in:
        raise ValueError(f"acts must be (n_images, n_tokens, {sae.d_in}) tokens, got {tuple(acts.shape)}")
    acts = acts.to(sae.b_dec)
    rows = acts.reshape(-1, acts.shape[-1])
    if method == "image_geometric_median":
        value = image_geometric_median(acts)
    elif method == "geometric_median":
        value = geometric_median(rows)
    else:
        value = rows.mean(dim=0)
    sae.b_dec.copy_(value)
