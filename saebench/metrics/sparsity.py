"""Sparsity and latent-usage metrics over codes.

Shapes: ``codes`` is ``(..., n_latents)``; leading dimensions are flattened into ``n`` rows (samples or
tokens), which form the *window* over which frequencies, dead and dense latents are measured.

A latent *fires* on a row when ``|code| > threshold``. With the default ``threshold = 0`` that is "non-zero",
the convention of every paper here for ReLU/TopK/JumpReLU codes (exact zeros). USAE counts a concept as firing
when its code exceeds tau = 0.1 (usae.md §2.1); its codes are non-negative, so ``|z| > tau`` is ``z > tau``.
"""

from __future__ import annotations

import torch

from saebench.metrics.validation import as_rows

__all__ = [
    "HIGH_FREQUENCY_THRESHOLD",
    "firing_mask",
    "firing_frequency",
    "l0_count",
    "sparsity_fraction",
    "dead_mask_from_frequency",
    "dense_mask_from_frequency",
    "dead_latent_mask",
    "dead_latent_fraction",
    "dense_latent_mask",
    "dense_latent_fraction",
]

HIGH_FREQUENCY_THRESHOLD = 0.1
"""Default firing frequency above which a latent counts as dense: Rajamanoharan et al. 2024 (JumpReLU SAEs)
report "high-frequency" latents as those active on more than 10% of tokens."""


def _check_threshold(threshold: float) -> None:
    if not threshold >= 0:
        raise ValueError(f"firing threshold must be >= 0, got {threshold!r}")


def _check_frequency(value: float, name: str) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} is a firing frequency and must lie in [0, 1], got {value!r}")


def firing_mask(codes: torch.Tensor, threshold: float = 0.0) -> torch.Tensor:
    """``(n, n_latents)`` bool: ``|codes| > threshold`` (leading dimensions flattened)."""
    _check_threshold(threshold)
    return as_rows(codes, "codes").abs() > threshold


def firing_frequency(codes: torch.Tensor, threshold: float = 0.0) -> torch.Tensor:
    """``(n_latents,)`` float64: the share of rows on which each latent fires.

    The per-latent "activation frequency" / "feature density" of MSAE training logs (msae.md §2.5), SAELens.
    (PatchSAE's logged frequency divides token counts by the number of *images*, a quirk not reproduced here.)
    """
    return firing_mask(codes, threshold).to(torch.float64).mean(dim=0)


def l0_count(codes: torch.Tensor, threshold: float = 0.0) -> float:
    """Mean over rows of the number of firing latents: ``mean_i #{j : |z_ij| > threshold}``.

    The usual L0 (PatchSAE Table 2 "L0": latents > 0 per token averaged over tokens and images, patchsae.md
    §1.3; TopK's ``k``). MSAE's "L0" is a different quantity: see :func:`sparsity_fraction`.
    """
    return float(firing_mask(codes, threshold).sum(dim=-1).to(torch.float64).mean())


def sparsity_fraction(codes: torch.Tensor) -> float:
    """Share of exact zeros: ``mean_i mean_j [z_ij == 0]``, in [0, 1] (higher = sparser).

    MSAE's "L0 measure" (msae.md §2.4; the "~80% sparsity" headline). Equals ``1 - l0_count / n_latents``.
    """
    return float((as_rows(codes, "codes") == 0).to(torch.float64).mean())


def dead_mask_from_frequency(frequency: torch.Tensor, max_frequency: float = 0.0) -> torch.Tensor:
    """``(n_latents,)`` bool: latents whose firing frequency is ``<= max_frequency``.

    ``max_frequency = 0`` (default): never fired in the window, as the MSAE evaluation scripts and the USAE
    analysis count dead latents (msae.md §2.5, usae.md §2.1). MSAE training logs use ``10**-5.5``, PatchSAE
    ``1e-6`` (both with a strict ``<``; the two differ only at exact equality).
    """
    _check_frequency(max_frequency, "max_frequency")
    return frequency <= max_frequency


def dense_mask_from_frequency(
    frequency: torch.Tensor, min_frequency: float = HIGH_FREQUENCY_THRESHOLD
) -> torch.Tensor:
    """``(n_latents,)`` bool: latents whose firing frequency is ``> min_frequency`` (default 0.1)."""
    _check_frequency(min_frequency, "min_frequency")
    return frequency > min_frequency


def dead_latent_mask(codes: torch.Tensor, max_frequency: float = 0.0, threshold: float = 0.0) -> torch.Tensor:
    """``(n_latents,)`` bool: dead latents over the window of rows in ``codes``
    (see :func:`dead_mask_from_frequency`)."""
    return dead_mask_from_frequency(firing_frequency(codes, threshold), max_frequency)


def dead_latent_fraction(codes: torch.Tensor, max_frequency: float = 0.0, threshold: float = 0.0) -> float:
    """Share of latents that are dead over the window (count / n_latents; MSAE reports the count)."""
    return float(dead_latent_mask(codes, max_frequency, threshold).to(torch.float64).mean())


def dense_latent_mask(
    codes: torch.Tensor, min_frequency: float = HIGH_FREQUENCY_THRESHOLD, threshold: float = 0.0
) -> torch.Tensor:
    """``(n_latents,)`` bool: latents firing on more than ``min_frequency`` of the rows."""
    return dense_mask_from_frequency(firing_frequency(codes, threshold), min_frequency)


def dense_latent_fraction(
    codes: torch.Tensor, min_frequency: float = HIGH_FREQUENCY_THRESHOLD, threshold: float = 0.0
) -> float:
    """Share of latents firing on more than ``min_frequency`` of the rows."""
    return float(dense_latent_mask(codes, min_frequency, threshold).to(torch.float64).mean())
