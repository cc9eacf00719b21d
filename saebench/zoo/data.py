"""Fashion-MNIST as in-memory tensors for training the zoo, and the zoo's image preprocessing.

The files are found (or the missing-data error raised, naming how to get them) by
:class:`saebench.acts.sources.FashionMNISTSource`; training reads its arrays directly instead of decoding
60,000 PIL images. :data:`ZOO_PREPROCESSING` turns a source's PIL image into exactly the tensor
:func:`normalize_pixels` makes from the same pixels, so a zoo model sees the same numbers whether it is
trained here or run as a backbone by the cache runner.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from saebench.acts.backbones.preprocessing import Preprocessing
from saebench.acts.sources import FashionMNISTSource

__all__ = [
    "FASHION_MNIST_MEAN",
    "FASHION_MNIST_STD",
    "ZOO_PREPROCESSING",
    "LabelledImages",
    "load_fashion_mnist",
    "normalize_pixels",
]

FASHION_MNIST_MEAN = 0.2860
"""Mean pixel of the Fashion-MNIST training split in [0, 1] (0.28604 over 60,000 × 784 pixels)."""
FASHION_MNIST_STD = 0.3530
"""Standard deviation of the training pixels in [0, 1] (0.35302)."""

ZOO_PREPROCESSING = Preprocessing(
    resize=(28, 28),
    interpolation="bilinear",
    mean=(FASHION_MNIST_MEAN,) * 3,
    std=(FASHION_MNIST_STD,) * 3,
)
"""Backbone preprocessing of every zoo model: 28×28 (no resampling for Fashion-MNIST), grey copied to RGB,
standardised with the training-split statistics."""


@dataclass(frozen=True)
class LabelledImages:
    """``pixels``: ``(N, 28, 28)`` uint8; ``labels``: ``(N,)`` int64; ``fingerprint``: the source's."""

    pixels: Tensor
    labels: Tensor
    fingerprint: dict[str, Any]

    def __len__(self) -> int:
        return len(self.labels)


def load_fashion_mnist(
    split: str, first_n: int | None = None, root: str | Path | None = None
) -> LabelledImages:
    """The first ``first_n`` images (all if None) of a Fashion-MNIST split, in file order.

    Raises the source's ``FileNotFoundError`` (which says how to install the data) when the files are missing.
    """
    source = _source(split, None if root is None else str(root))
    count = len(source) if first_n is None else first_n
    if not isinstance(count, int) or not 0 < count <= len(source):
        raise ValueError(f"first_n must be an int in 1..{len(source)} for {source.name}, got {first_n!r}")
    return LabelledImages(
        pixels=torch.from_numpy(source.images[:count].copy()),
        labels=torch.from_numpy(source.labels[:count].astype("int64")),
        fingerprint={**source.fingerprint(), "first_n": first_n},
    )


@functools.cache
def _source(split: str, root: str | None) -> FashionMNISTSource:
    """The split, read once per process (decompressing the training images takes about a second)."""
    return FashionMNISTSource(split=split, root=root)


def normalize_pixels(pixels: Tensor) -> Tensor:
    """``(B, 1, H, W)`` float32 model input from ``(B, H, W)`` uint8 pixels, computed as the backbone
    preprocessing does (``x / 255``, then ``(x - mean) / std``)."""
    if pixels.dtype != torch.uint8 or pixels.ndim != 3:
        raise ValueError(f"pixels must be (B, H, W) uint8, got {tuple(pixels.shape)} {pixels.dtype}")
    x = pixels.unsqueeze(1).float().div_(255.0)
    mean = torch.tensor([FASHION_MNIST_MEAN])
    std = torch.tensor([FASHION_MNIST_STD])
    return x.sub_(mean.view(-1, 1, 1)).div_(std.view(-1, 1, 1))
