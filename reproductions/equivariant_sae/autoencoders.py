"""Base autoencoders on Shapes images (README ``--ae-architecture mlp|cnn|vit``, ``--ae-latent-dim 256``,
``--ae-epochs 100``, ``--ae-augment``); their latents are what the SAEs decompose.

The authors' architectures were not available (``shared/papers/equivariant.md`` §5.1); ours (NOTES.md):

* ``mlp``: ``flatten -> Linear(3 S², 512) -> ReLU -> Linear(512, latent)``; decoder mirrored, sigmoid output;
* ``cnn``: two stride-2 ``Conv(3x3) + ReLU`` (32, 64 channels) -> ``Linear(64 (S/4)², latent)``; decoder
  mirrored with transposed convolutions, linear output (with a sigmoid output, seed 0 saturated to an
  all-black reconstruction, pixel MSE 0.082, and never recovered: a saturated sigmoid passes no gradient);
* ``vit``: ``patch``-pixel patches (4 by default) -> ``Linear(3 patch², 64)`` + learned position embeddings
  + a class token -> 2 pre-norm transformer encoder layers (4 heads, MLP 128) -> class token ->
  ``Linear(64, latent)``; decoder: the ``mlp`` one (the latents come from the encoder, which is what
  ``--ae-architecture`` names).

``--ae-augment``: every training batch is rotated by a random multiple of 90° (one draw per image,
:func:`rotate_each`), so the autoencoder sees every orbit member. Loss: pixel MSE; Adam.
"""

from __future__ import annotations

import torch
from torch import nn

from saebench.data.shapes import GROUP_ORDER, rotate_images

ARCHITECTURES = ("mlp", "cnn", "vit")
VIT_WIDTH, VIT_DEPTH, VIT_HEADS, VIT_MLP = 64, 2, 4, 128


class PatchTransformer(nn.Module):
    """``(n, 3, S, S) -> (n, latent)``: the ``vit`` encoder (see the module docstring)."""

    def __init__(self, image_size: int, latent_dim: int, patch: int = 4):
        super().__init__()
        if image_size % patch:
            raise ValueError(
                f"the vit autoencoder needs an image size divisible by {patch}, got {image_size}"
            )
        tokens = (image_size // patch) ** 2
        self.patch = patch
        self.embed = nn.Linear(3 * patch * patch, VIT_WIDTH)
        self.position = nn.Parameter(torch.randn(1, tokens + 1, VIT_WIDTH) * 0.02)
        self.cls = nn.Parameter(torch.zeros(1, 1, VIT_WIDTH))
        layer = nn.TransformerEncoderLayer(
            VIT_WIDTH, VIT_HEADS, VIT_MLP, dropout=0.0, batch_first=True, norm_first=True
        )
        self.blocks = nn.TransformerEncoder(layer, VIT_DEPTH, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(VIT_WIDTH)
        self.head = nn.Linear(VIT_WIDTH, latent_dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        p = self.patch
        patches = nn.functional.unfold(images, kernel_size=p, stride=p).transpose(1, 2)  # (n, tokens, 3p²)
        x = torch.cat([self.cls.expand(images.shape[0], -1, -1), self.embed(patches)], dim=1) + self.position
        return self.head(self.norm(self.blocks(x))[:, 0])


class ShapesAutoencoder(nn.Module):
    """``encode: (n, 3, S, S) -> (n, latent)``; ``forward`` returns the reconstruction."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module):
        super().__init__()
        self.encoder, self.decoder = encoder, decoder

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.encoder(images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(images))


def _mlp_decoder(image_size: int, latent_dim: int) -> nn.Sequential:
    s = image_size
    return nn.Sequential(
        nn.Linear(latent_dim, 512),
        nn.ReLU(),
        nn.Linear(512, 3 * s * s),
        nn.Sigmoid(),
        nn.Unflatten(1, (3, s, s)),
    )


def build_autoencoder(architecture: str, image_size: int, latent_dim: int = 256) -> ShapesAutoencoder:
    """The ``architecture`` autoencoder for ``image_size`` RGB images (``cnn`` and ``vit`` need a multiple
    of 4)."""
    s = image_size
    if architecture == "mlp":
        encoder = nn.Sequential(
            nn.Flatten(), nn.Linear(3 * s * s, 512), nn.ReLU(), nn.Linear(512, latent_dim)
        )
        decoder = _mlp_decoder(s, latent_dim)
    elif architecture == "vit":
        encoder, decoder = PatchTransformer(s, latent_dim), _mlp_decoder(s, latent_dim)
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
            nn.ConvTranspose2d(32, 3, 4, stride=2, padding=1),  # linear output: see the module docstring
        )
    else:
        raise ValueError(f"unknown autoencoder architecture {architecture!r}; choose one of {ARCHITECTURES}")
    return ShapesAutoencoder(encoder, decoder)


def rotate_each(images: torch.Tensor, turns: torch.Tensor) -> torch.Tensor:
    """``(n, C, S, S)`` images, image ``i`` rotated by ``turns[i] * 90°`` counter-clockwise (one ``rot90``
    per distinct turn count, not one per image)."""
    out, turns = images.clone(), turns.to(images.device)
    for t in range(GROUP_ORDER):
        chosen = turns == t
        if t and chosen.any():
            out[chosen] = rotate_images(images[chosen], t)
    return out


def train_autoencoder(
    model: ShapesAutoencoder,
    images: torch.Tensor,
    epochs: int,
    batch_size: int = 128,
    lr: float = 1e-3,
    augment: bool = True,
    seed: int = 0,
) -> float:
    """Train in place on ``(n, 3, S, S)`` images (on the model's device); returns the last epoch's mean
    pixel MSE. The shuffling and rotation draws come from a CPU generator, so they do not depend on the
    device."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    last = float("nan")
    for _ in range(epochs):
        total, count = 0.0, 0
        for idx in torch.randperm(images.shape[0], generator=generator).split(batch_size):
            batch = images[idx]
            if augment:
                batch = rotate_each(
                    batch, torch.randint(0, GROUP_ORDER, (batch.shape[0],), generator=generator)
                )
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
    """``(n, G, 3, S, S) -> (n, G, latent)`` latents of every orbit member (computed on the model's device,
    returned on the CPU)."""
    n, g = orbit_images.shape[:2]
    flat = orbit_images.reshape(n * g, *orbit_images.shape[2:])
    device = next(model.parameters()).device
    latents = torch.cat([model.encode(chunk.to(device)).cpu() for chunk in flat.split(batch_size)])
    return latents.reshape(n, g, -1)
