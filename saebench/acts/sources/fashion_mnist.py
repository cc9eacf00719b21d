"""Fashion-MNIST (Xiao et al. 2017) from its IDX files: 60k train / 10k test 28×28 grayscale images.

Where the files are looked for, in order (offline_data.md B1):

1. the ``root`` argument, if given (and only there);
2. ``$SAEBENCH_DATA/fashion-mnist/``, ``$SAEBENCH_DATA/FashionMNIST/raw/`` (torchvision's layout),
   ``$SAEBENCH_DATA/``;
3. ``/usr/share/datasets/fashion-mnist/`` (Debian package ``dataset-fashion-mnist``);
4. with ``download=True``: torchvision's download into ``$SAEBENCH_DATA`` (or ``~/.cache/saebench``).

Each file may be gzip-compressed (``.gz``) or not.
"""

from __future__ import annotations

import gzip
import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from saebench.acts.sources.base import Sample, check_index

DATA_ENV = "SAEBENCH_DATA"
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
CLASS_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
_FILE_STEMS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_IDX_UBYTE = 0x08


def read_idx(path: str | Path) -> np.ndarray:
    """Array of an IDX file (LeCun's MNIST format) of unsigned bytes, gzip-compressed or not.

    Header: two zero bytes, a type byte (0x08 = ubyte), the number of dimensions n, then n big-endian uint32
    sizes; the data follows.
    """
    path = Path(path)
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path} is not an IDX file (bad magic number)")
    if raw[2] != _IDX_UBYTE:
        raise ValueError(f"{path}: IDX data type 0x{raw[2]:02x} is not unsigned byte (0x08)")
    n_dims = raw[3]
    header = 4 + 4 * n_dims
    shape = tuple(int.from_bytes(raw[4 + 4 * k : 8 + 4 * k], "big") for k in range(n_dims))
    if len(raw) != header + int(np.prod(shape)):
        raise ValueError(
            f"{path}: header says shape {shape} but the file holds {len(raw) - header} data bytes"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def candidate_dirs(root: str | Path | None) -> list[Path]:
    """Folders searched for the IDX files (see the module docstring)."""
    if root is not None:
        return [Path(root).expanduser()]
    dirs = []
    if os.environ.get(DATA_ENV):
        base = Path(os.environ[DATA_ENV]).expanduser()
        dirs += [base / "fashion-mnist", base / "FashionMNIST" / "raw", base]
    return dirs + [DEBIAN_DIR]


def _find(stem: str, dirs: list[Path]) -> Path | None:
    for folder in dirs:
        for candidate in (folder / f"{stem}.gz", folder / stem):
            if candidate.is_file():
                return candidate
    return None


def _download(split: str) -> Path:
    from torchvision.datasets import FashionMNIST

    base = Path(os.environ.get(DATA_ENV) or Path.home() / ".cache" / "saebench").expanduser()
    FashionMNIST(str(base), train=split == "train", download=True)
    return base / "FashionMNIST" / "raw"


class FashionMNISTSource:
    """The Fashion-MNIST ``"train"`` (60,000) or ``"test"`` (10,000) split, images as 28×28 ``L`` PIL images.

    Args:
        split: ``"train"`` or ``"test"``.
        root: the folder holding the IDX files; None searches the places listed in the module docstring.
        download: let torchvision download the files when they are not found (needs internet).
    """

    class_names = CLASS_NAMES

    def __init__(self, split: str = "train", root: str | Path | None = None, download: bool = False):
        if split not in _FILE_STEMS:
            raise ValueError(f"unknown Fashion-MNIST split {split!r}; valid: {', '.join(_FILE_STEMS)}")
        self.split = split
        self.name = f"fashion-mnist/{split}"
        dirs = candidate_dirs(root)
        image_stem, label_stem = _FILE_STEMS[split]
        if _find(image_stem, dirs) is None and download and root is None:
            dirs = [_download(split)]
        image_file, label_file = _find(image_stem, dirs), _find(label_stem, dirs)
        if image_file is None or label_file is None:
            raise FileNotFoundError(
                f"Fashion-MNIST {split} files ({image_stem}[.gz], {label_stem}[.gz]) not found in: "
                f"{', '.join(str(d) for d in dirs)}. Get them with `apt-get install dataset-fashion-mnist` "
                f"(installs {DEBIAN_DIR}), or put the four IDX .gz files in ${DATA_ENV}/fashion-mnist/ "
                f"and set {DATA_ENV}, or pass download=True to let torchvision download them (online only)."
            )
        self.images = read_idx(image_file)
        self.labels = read_idx(label_file)
        if self.images.ndim != 3 or self.labels.ndim != 1 or len(self.images) != len(self.labels):
            raise ValueError(
                f"{image_file} {self.images.shape} and {label_file} {self.labels.shape} are not "
                "(N, H, W) images with N labels"
            )
        self.files = (image_file, label_file)
        self._content_sha256: str | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> Sample:
        i = check_index(i, len(self), self.name)
        return Sample(image=Image.fromarray(self.images[i]), label=int(self.labels[i]), index=i)

    def label_of(self, i: int) -> int:
        return int(self.labels[check_index(i, len(self), self.name)])

    def fingerprint(self) -> dict[str, Any]:
        if self._content_sha256 is None:  # hashing the 47 MB training split takes a moment: once is enough
            digest = hashlib.sha256(self.images.tobytes())
            digest.update(self.labels.tobytes())
            self._content_sha256 = digest.hexdigest()
        return {
            "kind": "fashion-mnist",
            "split": self.split,
            "n_images": len(self),
            "content_sha256": self._content_sha256,
        }
