"""Base autoencoders on Shapes images (README ``--ae-architecture mlp|cnn``, ``--ae-latent-dim 256``,
``--ae-epochs 100``, ``--ae-augment``); their latents are what the SAEs decompose.

The authors' architectures were not available (``shared/papers/equivariant.md`` §5.1); ours (NOTES.md):

* ``mlp``: ``flatten -> Linear(3 S², 512) -> ReLU -> Linear(512, latent)``; decoder mirrored, sigmoid output;
* ``cnn``: two stride-2 ``Conv(3x3) + ReLU`` (32, 64 channels) -> ``Linear(64 (S/4)², latent)``; decoder
  mirrored with transposed convolutions, sigmoid output.

``--ae-augment``: every training batch is rotated by a random multiple of 90° (one draw per image), so the
autoencoder sees every orbit member. Loss: pixel MSE; Adam.
"""

from __future__ import annotations

import torch
from torch import nn

from saebench.data.shapes import rotate_images

ARCHITECTURES = ("mlp", "cnn")


class ShapesAutoencoder(nn.Module):
    """``encode: (n, 3, S, S) -> (n, latent)``; ``forward`` returns the reconstruction."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module):
        super().__init__()
        self.encoder, self.decoder = encoder, decoder

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.encoder(images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(images))


def build_autoencoder(architecture: str, image_size: int, latent_dim: int = 256) -> ShapesAutoencoder:
    """The ``architecture`` autoencoder for ``image_size`` RGB images (``cnn`` needs a multiple of 4)."""
    s = image_size
    if architecture == "mlp":
        encoder = nn.Sequential(
            nn.Flatten(), nn.Linear(3 * s * s, 512), nn.ReLU(), nn.Linear(512, latent_dim)
        )
        decoder = nn.Sequential(
            nn.Linear(latent_dim, 512),
            nn.ReLU(),
            nn.Linear(512, 3 * s * s),
            nn.Sigmoid(),
            nn.Unflatten(1, (3, s, s)),
        )
    elif architecture == "cnn":
        if s % 4:
            raise ValueError(f"the cnn autoencoder needs an image size divisible by 4, got {s}")
        q = s // 4
        encoder = nn.Sequential(
            nn.Conv2d(3, 32, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(64 * q * q, latent_dim),
        )
        decoder = nn.Sequential(
            nn.Linear(latent_dim, 64 * q * q),
            nn.ReLU(),
            nn.Unflatten(1, (64, q, q)),
            nn.ConvTranspose2d(64, 32, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.ConvTranspose2d(32, 3, 4, stride=2, padding=1),
            nn.Sigmoid(),
        )
    else:
        raise ValueError(f"unknown autoencoder architecture {architecture!r}; choose one of {ARCHITECTURES}")
    return ShapesAutoencoder(encoder, decoder)


def train_autoencoder(
    model: ShapesAutoencoder,
    images: torch.Tensor,
    epochs: int,
    batch_size: int = 128,
    lr: float = 1e-3,
    augment: bool = True,
    seed: int = 0,
) -> float:
    """Train in place on ``(n, 3, S, S)`` images; returns the last epoch's mean pixel MSE."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    last = float("nan")
    for _ in range(epochs):
        total, count = 0.0, 0
        for idx in torch.randperm(images.shape[0], generator=generator).split(batch_size):
            batch = images[idx]
            if augment:
                turns = torch.randint(0, 4, (batch.shape[0],), generator=generator)
                batch = torch.stack([rotate_images(img, int(t)) for img, t in zip(batch, turns, strict=True)])
            loss = (model(batch) - batch).pow(2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total, count = total + float(loss.detach()) * len(idx), count + len(idx)
        last = total / count
    return last


@torch.no_grad()
def encode_orbits(
    model: ShapesAutoencoder, orbit_images: torch.Tensor, batch_size: int = 512
) -> torch.Tensor:
    """``(n, G, 3, S, S) -> (n, G, latent)`` latents of every orbit member."""
    n, g = orbit_images.shape[:2]
    flat = orbit_images.reshape(n * g, *orbit_images.shape[2:])
    latents = torch.cat([model.encode(chunk) for chunk in flat.split(batch_size)])
    return latents.reshape(n, g, -1)
