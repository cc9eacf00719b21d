"""Input checks shared by every metric: shapes, finiteness, and the float64 row view the metrics compute on.

Every metric flattens the leading dimensions of its inputs into rows: ``(..., d) -> (n, d)`` with
``n = prod(leading dims)``, so token grids ``(images, tokens, d)`` and flat batches ``(n, d)`` are alike.
"""

from __future__ import annotations

import torch

__all__ = ["as_rows", "paired_rows", "check_finite"]


def check_finite(t: torch.Tensor, name: str) -> None:
    """Raise ``ValueError`` naming ``name`` and the number of bad entries if ``t`` holds NaN or Inf."""
    if not torch.isfinite(t).all():
        bad = int((~torch.isfinite(t)).sum().item())
        raise ValueError(
            f"{name} contains {bad} NaN/Inf value(s); metrics need finite inputs, clean them first"
        )


def as_rows(t: torch.Tensor, name: str) -> torch.Tensor:
    """Validate ``t`` and return it as a detached float64 ``(n, d)`` matrix (leading dimensions flattened).

    Errors: not a tensor, fewer than 2 dimensions, no rows or no columns, NaN/Inf.
    """
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.ndim < 2:
        raise ValueError(
            f"{name} must have shape (..., d) with at least one row dimension, got {tuple(t.shape)}; "
            f"use {name}.unsqueeze(0) for a single vector"
        )
    if t.numel() == 0:
        raise ValueError(
            f"{name} is empty (shape {tuple(t.shape)}); metrics need at least one row and column"
        )
    check_finite(t, name)
    return t.detach().reshape(-1, t.shape[-1]).to(torch.float64)


def paired_rows(x: torch.Tensor, x_hat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate an input and its reconstruction (identical shapes) and return both as float64 ``(n, d)``."""
    if isinstance(x, torch.Tensor) and isinstance(x_hat, torch.Tensor) and x.shape != x_hat.shape:
        raise ValueError(
            f"x has shape {tuple(x.shape)} but x_hat has shape {tuple(x_hat.shape)}; "
            "a reconstruction must have the shape of its input"
        )
    return as_rows(x, "x"), as_rows(x_hat, "x_hat")
