"""Patch-level activation maps of SAE latents, segmentation masks from them, and mask IoU.

PatchSAE (Lim et al., ICLR 2025, §3.2, Figs. 2c, 4, 9) shows where a latent fires by reshaping its codes on
the patch tokens, ``h_{i,1..196}[s]``, into the 14 x 14 grid and upsampling it onto the image. The authors'
demo (``src/demo/app.py`` ``get_segmask``) upsamples nearest-neighbour, min-max normalises and darkens the
pixels where the normalised map is 0. The paper has no quantitative segmentation metric: :func:`mask_iou` is
saebench's, for worlds with ground-truth masks (``saebench.data.patch_world``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from saebench.acts.tokens import TokenLayout

__all__ = ["patch_activation_maps", "minmax_normalize_maps", "segmentation_masks", "mask_iou"]


def patch_activation_maps(codes: torch.Tensor, layout: TokenLayout, latents: Sequence[int]) -> torch.Tensor:
    """``(n_images, T, h) -> (n_images, len(latents), gh, gw)``: each picked latent's codes on the patch grid.

    ``layout`` says which of the ``T`` tokens are patches (``TokenLayout.grid``, row-major after the class and
    register tokens). Tokens beyond the layout (e.g. prompt tokens appended at the end, as MaPLe does) must
    be sliced off first: ``codes[:, :layout.n_tokens]``.
    """
    if codes.ndim != 3:
        raise ValueError(f"codes must be (n_images, n_tokens, n_latents), got shape {tuple(codes.shape)}")
    if layout.grid is None:
        raise ValueError(f"layout {layout} has no patch grid, so there are no patch maps")
    if codes.shape[1] != layout.n_tokens:
        raise ValueError(
            f"codes have {codes.shape[1]} tokens but the layout has {layout.n_tokens}; slice extra tokens "
            "(e.g. appended prompt tokens) off with codes[:, :layout.n_tokens]"
        )
    index = torch.as_tensor(list(latents), dtype=torch.long, device=codes.device)
    if index.ndim != 1 or index.numel() == 0:
        raise ValueError("latents must be a non-empty sequence of latent indices")
    if int(index.min()) < 0 or int(index.max()) >= codes.shape[2]:
        raise ValueError(f"latent indices must lie in [0, {codes.shape[2]}), got {index.tolist()}")
    gh, gw = layout.grid
    patches = codes[:, layout.n_prefix :, :].index_select(2, index)  # (n, gh*gw, k)
    return patches.transpose(1, 2).reshape(codes.shape[0], index.numel(), gh, gw)


def minmax_normalize_maps(maps: torch.Tensor) -> torch.Tensor:
    """``(..., H, W)``: each map rescaled to ``(m - min) / (max - min)``; a constant map becomes all zeros."""
    low = maps.amin(dim=(-2, -1), keepdim=True)
    span = maps.amax(dim=(-2, -1), keepdim=True) - low
    return torch.where(span > 0, (maps - low) / torch.where(span > 0, span, torch.ones_like(span)), 0.0)


def segmentation_masks(
    maps: torch.Tensor, threshold: float = 0.0, size: tuple[int, int] | None = None
) -> torch.Tensor:
    """``(..., gh, gw) -> (..., H, W)`` bool masks: min-max normalised map ``> threshold``.

    With the default ``threshold = 0`` this is the region the authors' demo leaves undarkened. ``size``
    upsamples nearest-neighbour to ``(H, W)`` first (the demo's upsampling; ``None`` keeps the grid).
    """
    if maps.ndim < 2:
        raise ValueError(f"maps must be (..., gh, gw), got shape {tuple(maps.shape)}")
    if not 0.0 <= threshold < 1.0:
        raise ValueError(
            f"threshold applies to min-max normalised maps and must be in [0, 1), got {threshold}"
        )
    if size is not None:
        lead = maps.shape[:-2]
        flat = maps.reshape(-1, 1, *maps.shape[-2:]).float()
        maps = F.interpolate(flat, size=tuple(size), mode="nearest").reshape(*lead, *size)
    return minmax_normalize_maps(maps.float()) > threshold


def mask_iou(pred: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """``(..., H, W)`` bool masks -> ``(...)`` intersection over union; two empty masks give 1."""
    if pred.shape != truth.shape:
        raise ValueError(f"pred and truth masks differ in shape: {tuple(pred.shape)} vs {tuple(truth.shape)}")
    if pred.dtype != torch.bool or truth.dtype != torch.bool:
        raise ValueError("mask_iou takes bool masks; threshold soft maps first (segmentation_masks)")
    intersection = (pred & truth).sum(dim=(-2, -1)).to(torch.float64)
    union = (pred | truth).sum(dim=(-2, -1)).to(torch.float64)
    return torch.where(union > 0, intersection / union.clamp_min(1), 1.0)
