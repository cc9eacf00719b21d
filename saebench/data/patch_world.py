"""A toy ViT residual stream with spatially localised planted concepts and their ground-truth masks.

Each image is a sequence ``[CLS, patch_1, ..., patch_{gh*gw}]`` (row-major patches, the token order of
:class:`saebench.acts.tokens.TokenLayout`) of ``d``-dimensional tokens, like the all-token input of PatchSAE
(Lim et al., ICLR 2025, §3.1). Every token starts from a shared background direction with a random
magnitude plus Gaussian noise. Each image holds ``concepts_per_image`` distinct concepts; concept ``c``
covers a random rectangle of the patch grid, and each patch inside it gets ``+ a * u_c`` (``u_c`` a fixed unit
direction, ``a`` uniform in ``amplitude``). The CLS token is the background plus the mean of the planted patch
contributions, so it carries every concept of the image, weaker than the patches do. The rectangles are the
ground truth that patch activation maps (:mod:`saebench.metrics.patch_maps`) must localise.

Everything is drawn from ``torch.Generator`` seeded by ``(seed, stream)``: the same world and stream give the
same tokens on every machine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch

from saebench.acts.tokens import TokenLayout

__all__ = ["PatchWorldConfig", "PatchWorldSample", "PatchWorld"]


@dataclass(frozen=True)
class PatchWorldConfig:
    """d: token width. grid: patch grid ``(gh, gw)``. n_concepts: planted concepts. concepts_per_image:
    distinct concepts per image. region_size: ``(min, max)`` side length of a concept's rectangle, in patches.
    amplitude: ``(low, high)`` of a concept's coefficient. background: ``(low, high)`` of the background
    magnitude. noise_std: per-element Gaussian noise. seed: the world's directions and default stream."""

    d: int = 32
    grid: tuple[int, int] = (8, 8)
    n_concepts: int = 6
    concepts_per_image: int = 2
    region_size: tuple[int, int] = (2, 4)
    amplitude: tuple[float, float] = (1.0, 2.0)
    background: tuple[float, float] = (0.5, 1.0)
    noise_std: float = 0.05
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "grid", tuple(self.grid))
        object.__setattr__(self, "region_size", tuple(self.region_size))
        object.__setattr__(self, "amplitude", tuple(self.amplitude))
        object.__setattr__(self, "background", tuple(self.background))
        if self.d < self.n_concepts + 1:
            raise ValueError(
                f"d ({self.d}) must exceed n_concepts ({self.n_concepts}) so that the concept and background "
                "directions are orthonormal"
            )
        if len(self.grid) != 2 or min(self.grid) < 1:
            raise ValueError(f"grid must be (gh, gw) with positive sides, got {self.grid}")
        if not 1 <= self.concepts_per_image <= self.n_concepts:
            raise ValueError(
                f"concepts_per_image must be in [1, n_concepts={self.n_concepts}], "
                f"got {self.concepts_per_image}"
            )
        low, high = self.region_size
        if not 1 <= low <= high <= min(self.grid):
            raise ValueError(
                f"region_size must satisfy 1 <= min <= max <= {min(self.grid)}, got {self.region_size}"
            )
        for name in ("amplitude", "background"):
            lo, hi = getattr(self, name)
            if not 0 <= lo <= hi:
                raise ValueError(f"{name} must be (low, high) with 0 <= low <= high, got {(lo, hi)}")
        if self.noise_std < 0:
            raise ValueError(f"noise_std must be >= 0, got {self.noise_std}")


class PatchWorldSample(NamedTuple):
    """tokens: ``(n, 1 + gh*gw, d)``. masks: ``(n, n_concepts, gh, gw)`` bool ground truth (all False for an
    absent concept). present: ``(n, n_concepts)`` bool. labels: ``(n,)`` the first concept drawn for each
    image (a class label for per-class statistics)."""

    tokens: torch.Tensor
    masks: torch.Tensor
    present: torch.Tensor
    labels: torch.Tensor


class PatchWorld:
    """Seed-deterministic sampler of :class:`PatchWorldSample` (see the module docstring)."""

    def __init__(self, config: PatchWorldConfig):
        self.config = config
        generator = torch.Generator().manual_seed(config.seed)
        basis, _ = torch.linalg.qr(torch.randn(config.d, config.n_concepts + 1, generator=generator))
        self.background_direction = basis[:, 0].contiguous()
        self.concept_directions = basis[:, 1:].T.contiguous()  # (n_concepts, d), orthonormal rows
        self.layout = TokenLayout(n_cls=1, grid=config.grid)

    def sample(self, n: int, stream: int = 0) -> PatchWorldSample:
        """``n`` images from stream ``stream`` (distinct streams are independent draws: train, eval)."""
        if n < 1 or stream < 0:
            raise ValueError(f"need n >= 1 images and a stream >= 0, got {n=}, {stream=}")
        cfg = self.config
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + stream + 1)
        gh, gw = cfg.grid
        n_concepts = cfg.n_concepts
        chosen = torch.rand(n, n_concepts, generator=gen).argsort(dim=1)[:, : cfg.concepts_per_image]
        low, high = cfg.region_size
        sizes = torch.randint(low, high + 1, (n, cfg.concepts_per_image, 2), generator=gen)
        corners = (
            torch.rand(n, cfg.concepts_per_image, 2, generator=gen) * (torch.tensor(cfg.grid) - sizes + 1)
        ).long()
        rows = torch.arange(gh).view(1, 1, gh, 1)
        cols = torch.arange(gw).view(1, 1, 1, gw)
        top, left = corners[..., 0, None, None], corners[..., 1, None, None]
        in_rows = (rows >= top) & (rows < top + sizes[..., 0, None, None])
        in_cols = (cols >= left) & (cols < left + sizes[..., 1, None, None])
        regions = in_rows & in_cols  # (n, concepts_per_image, gh, gw)
        masks = torch.zeros(n, n_concepts, gh, gw, dtype=torch.bool)
        masks[torch.arange(n).unsqueeze(1), chosen] = regions
        present = masks.flatten(2).any(dim=2)
        amp_lo, amp_hi = cfg.amplitude
        amplitude = amp_lo + (amp_hi - amp_lo) * torch.rand(n, n_concepts, generator=gen)
        coefficients = masks.flatten(2).transpose(1, 2).float() * amplitude.unsqueeze(1)  # (n, P, C)
        planted = coefficients @ self.concept_directions  # (n, P, d)
        bg_lo, bg_hi = cfg.background
        magnitude = bg_lo + (bg_hi - bg_lo) * torch.rand(n, 1 + gh * gw, 1, generator=gen)
        tokens = magnitude * self.background_direction + cfg.noise_std * torch.randn(
            n, 1 + gh * gw, cfg.d, generator=gen
        )
        tokens[:, 1:] += planted
        tokens[:, 0] += planted.mean(dim=1)
        return PatchWorldSample(tokens=tokens, masks=masks, present=present, labels=chosen[:, 0].clone())
