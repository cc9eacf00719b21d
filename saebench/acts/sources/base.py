"""The image-source contract: :class:`Sample`, :class:`ImageSource`, :class:`UnreadableImageError`."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from PIL import Image

UNLABELED = -1
"""``Sample.label`` of an image without a class label (e.g. CC3M image-caption pairs)."""

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff", ".ppm", ".pgm")


@dataclass
class Sample:
    """One image of a source.

    Attributes:
        image: the decoded image (pixels loaded; any mode, the backbone's preprocessing converts to RGB).
        label: class index, or :data:`UNLABELED`.
        index: the image's index in its *original* source; a :func:`subset` keeps the original index, so it
            identifies the image whatever subset it was drawn through.
        caption: the paired text (webdataset ``.txt``), or None.
    """

    image: Image.Image
    label: int
    index: int
    caption: str | None = None


class UnreadableImageError(Exception):
    """An image that cannot be decoded. The cache runner skips and counts it; sources never drop it silently.

    Attributes:
        index: the image's index in its original source (as ``Sample.index``).
        origin: where the bytes came from (a file path, ``shard.tar:member``).
        reason: the decoder's error message.
    """

    def __init__(self, index: int, origin: str = "", reason: str = "unreadable"):
        where = f" ({origin})" if origin else ""
        super().__init__(f"image {index}{where} cannot be decoded: {reason}")
        self.index = index
        self.origin = origin
        self.reason = reason

    def __reduce__(self) -> tuple[Any, ...]:  # survives pickling across DataLoader worker processes
        return type(self), (self.index, self.origin, self.reason)


@runtime_checkable
class ImageSource(Protocol):
    """A finite, indexable, deterministic collection of images.

    Implementations: :class:`~saebench.acts.sources.ImageFolderSource`, ``WebDatasetSource``,
    ``FashionMNISTSource``, ``SkimagePhotosSource``, ``TensorImageSource`` and :func:`subset` views. They
    hold no open file handles, so they pickle into DataLoader workers.
    """

    name: str

    def __len__(self) -> int: ...

    def __getitem__(self, i: int) -> Sample:
        """Sample ``i``; raises :class:`UnreadableImageError` if its image cannot be decoded."""
        ...

    def label_of(self, i: int) -> int:
        """Label of sample ``i`` without decoding its image."""
        ...

    def fingerprint(self) -> dict[str, Any]:
        """JSON-ready dict of everything that determines the samples and their order."""
        ...


def check_index(i: int, length: int, name: str) -> int:
    """``i`` as a non-negative int in ``[0, length)`` (negative indices count from the end)."""
    if not isinstance(i, int) or isinstance(i, bool):
        raise TypeError(f"{name}: index must be an int, got {type(i).__name__}")
    if not -length <= i < length:
        raise IndexError(f"{name}: index {i} out of range for {length} images")
    return i % length


def decode_image(data: bytes | str | Path, index: int, origin: str) -> Image.Image:
    """Open and fully decode an image from bytes or a path; any decoder failure is an UnreadableImageError."""
    try:
        image = Image.open(io.BytesIO(data) if isinstance(data, bytes) else data)
        image.load()  # PIL is lazy: truncated files fail here, not at open
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as err:
        raise UnreadableImageError(index, origin, f"{type(err).__name__}: {err}") from err
    return image


def sha256_strings(items: Iterable[str]) -> str:
    """Hex sha256 of strings joined by newlines (fingerprints of file lists and keys)."""
    digest = hashlib.sha256()
    for item in items:
        digest.update(item.encode())
        digest.update(b"\n")
    return digest.hexdigest()
