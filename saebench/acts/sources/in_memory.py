"""Sources held in memory: images from a uint8 array (tests, toy data) and scikit-image's bundled photos."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from saebench.acts.sources.base import UNLABELED, Sample, check_index


class _ArraySource:
    """Images from a list of uint8 arrays ``(H, W)`` or ``(H, W, 3)`` with integer labels."""

    def __init__(self, name: str, arrays: Sequence[np.ndarray], labels: Sequence[int]):
        self.name = name
        self._arrays = list(arrays)
        self._labels = [int(label) for label in labels]

    def __len__(self) -> int:
        return len(self._arrays)

    def __getitem__(self, i: int) -> Sample:
        i = check_index(i, len(self), self.name)
        return Sample(image=Image.fromarray(self._arrays[i]), label=self._labels[i], index=i)

    def label_of(self, i: int) -> int:
        return self._labels[check_index(i, len(self), self.name)]

    def _content_sha256(self) -> str:
        digest = hashlib.sha256()
        for array, label in zip(self._arrays, self._labels, strict=True):
            digest.update(f"{array.shape}|{label}|".encode())
            digest.update(np.ascontiguousarray(array).tobytes())
        return digest.hexdigest()


class TensorImageSource(_ArraySource):
    """Images from a uint8 tensor or array ``(N, H, W)`` (grayscale) or ``(N, H, W, 3)`` (RGB).

    Args:
        images: the pixels.
        labels: N integer labels (default: all :data:`UNLABELED`).
        name: the source name.
    """

    def __init__(
        self,
        images: torch.Tensor | np.ndarray,
        labels: Sequence[int] | torch.Tensor | None = None,
        name: str = "tensor",
    ):
        array = images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
        if array.dtype != np.uint8:
            raise ValueError(
                f"images must be uint8 pixels, got {array.dtype}; convert with (x * 255).to(torch.uint8)"
            )
        if not (array.ndim == 3 or (array.ndim == 4 and array.shape[-1] == 3)):
            raise ValueError(f"images must be (N, H, W) or (N, H, W, 3), got shape {array.shape}")
        if labels is None:
            labels = [UNLABELED] * len(array)
        labels = [int(label) for label in (labels.tolist() if isinstance(labels, torch.Tensor) else labels)]
        if len(labels) != len(array):
            raise ValueError(f"{len(labels)} labels for {len(array)} images")
        super().__init__(name, list(array), labels)

    def fingerprint(self) -> dict[str, Any]:
        return {
            "kind": "tensor",
            "name": self.name,
            "n_images": len(self),
            "content_sha256": self._content_sha256(),
        }


SKIMAGE_PHOTOS = (
    "astronaut",
    "brick",
    "camera",
    "chelsea",
    "clock",
    "coffee",
    "coins",
    "grass",
    "gravel",
    "hubble_deep_field",
    "immunohistochemistry",
    "moon",
    "retina",
    "rocket",
)
"""Photographs bundled in the scikit-image wheel (offline_data.md B3); ``skimage.data`` reads them offline."""


class SkimagePhotosSource(_ArraySource):
    """scikit-image's bundled photos; each photo is its own class (label = position, ``class_names`` = names).

    Args:
        names: which photos, in this order (default :data:`SKIMAGE_PHOTOS`).
    """

    def __init__(self, names: Sequence[str] = SKIMAGE_PHOTOS):
        import skimage.data

        unknown = [n for n in names if n not in SKIMAGE_PHOTOS]
        if unknown:
            raise ValueError(f"unknown scikit-image photos {unknown}; valid: {', '.join(SKIMAGE_PHOTOS)}")
        self.class_names = tuple(names)
        super().__init__("skimage-photos", [getattr(skimage.data, n)() for n in names], range(len(names)))

    def fingerprint(self) -> dict[str, Any]:
        return {
            "kind": "skimage-photos",
            "names": list(self.class_names),
            "content_sha256": self._content_sha256(),
        }
