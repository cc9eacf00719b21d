"""The zoo's model definitions: a CNN, a ViT and an MLP for 28×28 grey images (Fashion-MNIST).

Every model takes ``(B, 1, H, W)`` or ``(B, 3, H, W)`` images; three channels (what the backbone
preprocessing makes of a grey image: the grey value copied to R, G, B) are averaged back to one. Every model
ends in a linear ``head`` on a pooled vector, so the pooled embedding is always "the input of ``head``".

- :class:`ZooCNN`: stages of 3×3 conv + BatchNorm + ReLU, a 2×2 max-pool between stages; with three stages
  on 28×28 the last stage's map is 7×7 (``features``), average-pooled into the head.
- :class:`ZooViT`: a pre-norm Vision Transformer like CLIP's image tower (Radford et al. 2021, §2.4;
  Dosovitskiy et al. 2021): 4×4 patches (a 7×7 grid on 28×28) plus a class token, learned position
  embeddings, blocks ``x + attn(ln(x))``, ``x + mlp(ln(x))`` whose outputs are the residual stream, a final
  LayerNorm (``norm``) and a linear head on the class token.
- :class:`ZooMLP`: flattened pixels through ReLU layers into the head (embeddings only, no token grid).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "CNNConfig",
    "ViTConfig",
    "MLPConfig",
    "ModelConfig",
    "ZooCNN",
    "ZooViT",
    "ZooMLP",
    "build_model",
    "parameter_count",
]


def _require_positive(owner: object, *names: str) -> None:
    for name in names:
        value = getattr(owner, name)
        values = value if isinstance(value, tuple) else (value,)
        if not values or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values):
            raise ValueError(f"{type(owner).__name__}.{name} must be positive int(s), got {value!r}")


def _as_tuple(owner: object, name: str) -> None:
    value = getattr(owner, name)
    if isinstance(value, list):
        object.__setattr__(owner, name, tuple(value))


@dataclass(frozen=True)
class CNNConfig:
    """:class:`ZooCNN` shape. ``channels[i]`` is stage i's width; ``len(channels) - 1`` max-pools halve the
    28×28 input, so three stages end on a 7×7 map."""

    channels: tuple[int, ...] = (16, 32, 64)
    convs_per_stage: int = 2
    image_size: int = 28
    n_outputs: int = 10

    def __post_init__(self) -> None:
        _as_tuple(self, "channels")
        _require_positive(self, "channels", "convs_per_stage", "image_size", "n_outputs")

    @property
    def grid(self) -> tuple[int, int]:
        """``(h, w)`` of the last stage's map (each max-pool floors the size by 2)."""
        size = self.image_size
        for _ in self.channels[1:]:
            size //= 2
        return (size, size)


@dataclass(frozen=True)
class ViTConfig:
    """:class:`ZooViT` shape: ``image_size / patch_size`` patches per side plus one class token."""

    image_size: int = 28
    patch_size: int = 4
    width: int = 64
    depth: int = 4
    heads: int = 4
    mlp_ratio: int = 2
    n_outputs: int = 10

    def __post_init__(self) -> None:
        _require_positive(
            self, "image_size", "patch_size", "width", "depth", "heads", "mlp_ratio", "n_outputs"
        )
        if self.image_size % self.patch_size:
            raise ValueError(
                f"ViTConfig: image_size {self.image_size} is not a multiple of patch_size {self.patch_size}"
            )
        if self.width % self.heads:
            raise ValueError(f"ViTConfig: width {self.width} is not divisible by heads {self.heads}")

    @property
    def grid(self) -> tuple[int, int]:
        side = self.image_size // self.patch_size
        return (side, side)


@dataclass(frozen=True)
class MLPConfig:
    """:class:`ZooMLP` shape: hidden widths of the ReLU layers between the pixels and the head."""

    hidden: tuple[int, ...] = (256, 128)
    image_size: int = 28
    n_outputs: int = 10

    def __post_init__(self) -> None:
        _as_tuple(self, "hidden")
        _require_positive(self, "hidden", "image_size", "n_outputs")


ModelConfig = CNNConfig | ViTConfig | MLPConfig


def grey(images: Tensor, image_size: int) -> Tensor:
    """``(B, 1, S, S)`` from ``(B, 1 or 3, S, S)`` images (three channels are averaged)."""
    if images.ndim != 4 or images.shape[1] not in (1, 3) or images.shape[2:] != (image_size, image_size):
        raise ValueError(
            f"zoo models take (B, 1 or 3, {image_size}, {image_size}) images, got {tuple(images.shape)}"
        )
    return images if images.shape[1] == 1 else images.mean(dim=1, keepdim=True)


class ZooCNN(nn.Module):
    """Conv stages -> global average pool -> ``head``; the last stage's output is the ``(B, C, 7, 7)`` map."""

    def __init__(self, config: CNNConfig):
        super().__init__()
        self.config = config
        stages, in_channels = [], 1
        for index, out_channels in enumerate(config.channels):
            layers: list[nn.Module] = [nn.MaxPool2d(2)] if index else []
            for _ in range(config.convs_per_stage):
                layers += [
                    nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
                    nn.BatchNorm2d(out_channels),
                    nn.ReLU(),
                ]
                in_channels = out_channels
            stages.append(nn.Sequential(*layers))
        self.stages = nn.Sequential(*stages)
        self.head = nn.Linear(in_channels, config.n_outputs)

    @property
    def features_module(self) -> str:
        """Module path of the last stage (the 7×7 map)."""
        return f"stages.{len(self.config.channels) - 1}"

    def embed(self, images: Tensor) -> Tensor:
        """``(B, C_last)`` average-pooled last map."""
        return self.stages(grey(images, self.config.image_size)).mean(dim=(2, 3))

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.embed(images))


class Attention(nn.Module):
    """Multi-head self-attention over ``(B, T, d)`` tokens (fused qkv projection, output projection)."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: Tensor) -> Tensor:
        batch, tokens, width = x.shape
        q, k, v = (
            self.qkv(x).reshape(batch, tokens, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4)
        )
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, width))


class Block(nn.Module):
    """Pre-norm transformer block; its output is the residual stream after the block."""

    def __init__(self, width: int, heads: int, mlp_ratio: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.attn = Attention(width, heads)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(
            nn.Linear(width, mlp_ratio * width), nn.GELU(), nn.Linear(mlp_ratio * width, width)
        )

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ZooViT(nn.Module):
    """Patch embedding + class token + position embedding -> ``blocks`` -> ``norm`` -> ``head`` on the CLS.

    Token order everywhere: ``[cls, patches row-major]``, ``1 + h*w`` tokens of width ``config.width``.
    """

    def __init__(self, config: ViTConfig):
        super().__init__()
        self.config = config
        h, w = config.grid
        self.patch_embed = nn.Conv2d(1, config.width, config.patch_size, stride=config.patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.width))
        self.pos_embed = nn.Parameter(torch.randn(1, 1 + h * w, config.width) * 0.02)
        self.blocks = nn.Sequential(
            *(Block(config.width, config.heads, config.mlp_ratio) for _ in range(config.depth))
        )
        self.norm = nn.LayerNorm(config.width)
        self.head = nn.Linear(config.width, config.n_outputs)
        nn.init.normal_(self.cls_token, std=0.02)

    def input_tokens(self, images: Tensor) -> Tensor:
        """``(B, 1 + h*w, width)``: the first block's input, ``[cls, patches]`` plus position embeddings."""
        patches = self.patch_embed(grey(images, self.config.image_size)).flatten(2).transpose(1, 2)
        cls = self.cls_token.expand(patches.shape[0], -1, -1)
        return torch.cat([cls, patches], dim=1) + self.pos_embed

    def tokens(self, images: Tensor) -> Tensor:
        """``(B, 1 + h*w, width)``: the final-norm output of every token."""
        return self.norm(self.blocks(self.input_tokens(images)))

    def embed(self, images: Tensor) -> Tensor:
        """``(B, width)``: the class token after the final norm (what ``head`` reads)."""
        return self.tokens(images)[:, 0]

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.embed(images))


class ZooMLP(nn.Module):
    """Flattened pixels -> ``layers`` (Linear + ReLU each) -> ``head``."""

    def __init__(self, config: MLPConfig):
        super().__init__()
        self.config = config
        widths = (config.image_size**2, *config.hidden)
        self.layers = nn.Sequential(
            *(nn.Sequential(nn.Linear(a, b), nn.ReLU()) for a, b in zip(widths[:-1], widths[1:], strict=True))
        )
        self.head = nn.Linear(widths[-1], config.n_outputs)

    def embed(self, images: Tensor) -> Tensor:
        """``(B, hidden[-1])``: the last hidden layer."""
        return self.layers(grey(images, self.config.image_size).flatten(1))

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.embed(images))


_MODELS: dict[type, type[nn.Module]] = {CNNConfig: ZooCNN, ViTConfig: ZooViT, MLPConfig: ZooMLP}


def build_model(config: ModelConfig) -> nn.Module:
    """The model for ``config`` with fresh weights drawn from torch's global RNG (seed it first)."""
    if type(config) not in _MODELS:
        valid = ", ".join(cls.__name__ for cls in _MODELS)
        raise TypeError(f"no zoo model for config {type(config).__name__}; valid configs: {valid}")
    return _MODELS[type(config)](config)


def parameter_count(model: nn.Module) -> int:
    """Number of trainable scalars."""
    return sum(p.numel() for p in model.parameters())
