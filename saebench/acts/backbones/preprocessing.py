"""Image preprocessing of a backbone: resize, centre crop, interpolation, mean/std normalisation."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # OpenAI CLIP (open_clip OPENAI_DATASET_MEAN)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
HALF = (0.5, 0.5, 0.5)  # timm AugReg ViT and SigLIP: x -> 2x - 1

_INTERPOLATIONS = (
    "nearest",
    "bilinear",
    "bicubic",
    "box",
    "hamming",
    "lanczos",
)  # torchvision InterpolationMode values


def _as_size(value: int | tuple[int, int] | list[int], what: str) -> int | tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        if value <= 0:
            raise ValueError(f"Preprocessing.{what} must be positive, got {value}")
        return value
    size = tuple(value)
    if len(size) != 2 or not all(isinstance(s, int) and s > 0 for s in size):
        raise ValueError(f"Preprocessing.{what} must be an int or (height, width), got {value!r}")
    return size


@dataclass(frozen=True)
class Preprocessing:
    """How a PIL image becomes the backbone's input tensor.

    Steps, in order: convert to RGB (grayscale is replicated), resize, optional centre crop, scale to [0, 1],
    normalise with ``(x - mean) / std`` per channel.

    Attributes:
        resize: an int resizes the *shorter* side to that length keeping the aspect ratio (torchvision
            ``Resize(int)``, as in open_clip's and timm's eval transforms); ``(height, width)`` resizes to
            exactly that size, ignoring the aspect ratio (USAE's ``Resize((224, 224))``, usae.md §1.7).
        crop: centre crop to this size after resizing (int = square), or ``None`` for no crop.
        interpolation: ``"bilinear" | "bicubic" | "nearest" | "box" | "hamming" | "lanczos"``; PIL resizing
            always antialiases.
        mean, std: per-channel normalisation in [0, 1] pixel units.
    """

    resize: int | tuple[int, int]
    crop: int | tuple[int, int] | None = None
    interpolation: str = "bicubic"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self) -> None:
        object.__setattr__(self, "resize", _as_size(self.resize, "resize"))
        if self.crop is not None:
            object.__setattr__(self, "crop", _as_size(self.crop, "crop"))
        if self.interpolation not in _INTERPOLATIONS:
            raise ValueError(
                f"unknown interpolation {self.interpolation!r}; valid: {', '.join(_INTERPOLATIONS)}"
            )
        for field_name in ("mean", "std"):
            values = tuple(float(v) for v in getattr(self, field_name))
            if len(values) != 3:
                raise ValueError(f"Preprocessing.{field_name} needs 3 values (R, G, B), got {values}")
            object.__setattr__(self, field_name, values)
        if min(self.std) <= 0:
            raise ValueError(f"Preprocessing.std must be positive, got {self.std}")
        if self.crop is None and isinstance(self.resize, int):
            raise ValueError(
                "Preprocessing with resize=int (shorter side) and no crop gives images of varying size; "
                "add crop=... or resize to an exact (height, width)"
            )

    @property
    def output_size(self) -> tuple[int, int]:
        """``(height, width)`` of every transformed image."""
        size = self.crop if self.crop is not None else self.resize
        return (size, size) if isinstance(size, int) else size

    def transform(self) -> Callable[[Image.Image], torch.Tensor]:
        """A picklable callable mapping a PIL image to a ``(3, H, W)`` float32 tensor."""
        return ImageTransform(self)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (part of the backbone fingerprint)."""

        def listed(v: Any) -> Any:
            return list(v) if isinstance(v, tuple) else v

        return {
            "resize": listed(self.resize),
            "crop": listed(self.crop),
            "interpolation": self.interpolation,
            "mean": list(self.mean),
            "std": list(self.std),
        }


class ImageTransform:
    """``Preprocessing`` as a callable (a class, not a closure, so DataLoader workers can pickle it)."""

    def __init__(self, preprocessing: Preprocessing):
        self.preprocessing = preprocessing

    def __call__(self, image: Image.Image) -> torch.Tensor:
        # imported on first use: torchvision takes seconds to import
        import torchvision.transforms.functional as TF
        from torchvision.transforms import InterpolationMode

        if not isinstance(image, Image.Image):
            raise TypeError(f"expected a PIL.Image.Image, got {type(image).__name__}")
        p = self.preprocessing
        image = image.convert("RGB")
        image = TF.resize(image, p.resize, interpolation=InterpolationMode(p.interpolation), antialias=True)
        if p.crop is not None:
            image = TF.center_crop(image, p.crop)
        pixels = TF.pil_to_tensor(image).float().div_(255.0)
        return TF.normalize(pixels, mean=list(p.mean), std=list(p.std))

    def __repr__(self) -> str:
        return f"ImageTransform({self.preprocessing})"
