"""Shared small inputs for the metric tests (values chosen so every metric can be computed by hand)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture
def pair() -> tuple[torch.Tensor, torch.Tensor]:
    """Two rows in d = 3. The errors are x_hat - x = [0, 0, 1] and [0, -1, 0]: one unit error per row."""
    x = torch.tensor([[1.0, 2.0, 3.0], [4.0, 6.0, 8.0]])
    x_hat = torch.tensor([[1.0, 2.0, 4.0], [4.0, 5.0, 8.0]])
    return x, x_hat


@pytest.fixture
def codes() -> torch.Tensor:
    """Three rows of four latents: latent 2 never fires, latent 3 fires once with a small value."""
    return torch.tensor(
        [
            [0.0, 1.5, 0.0, 0.0],
            [0.2, 0.0, 0.0, 0.0],
            [0.0, 3.0, 0.0, 0.05],
        ]
    )


@pytest.fixture
def offset_data() -> tuple[torch.Tensor, torch.Tensor]:
    """400 rows in d = 16 whose dimensions have different means and scales, plus a noisy reconstruction."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(400, 16, generator=gen) * torch.linspace(0.5, 3.0, 16) + torch.linspace(-5.0, 5.0, 16)
    x_hat = x + 0.3 * torch.randn(400, 16, generator=gen)
    return x, x_hat
