"""Images in class folders: ``root/[split/]<class>/<image>`` (the ImageNet / torchvision layout)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from saebench.acts.sources.base import IMAGE_EXTENSIONS, Sample, check_index, decode_image, sha256_strings


class ImageFolderSource:
    """Every image under ``root/split/<class>/`` (or ``root/<class>/`` without a split).

    Classes are the sub-folder names in sorted order, labelled 0..C-1: for ImageNet's class-id folders
    (``n01440764``, ...) that is the standard ImageNet-1k label order. Images are found recursively, by
    extension (case-insensitive: ``.JPEG`` counts), and ordered by (class, relative path).

    The fingerprint hashes the relative paths and labels, not the root folder, so the same data at another
    path gives the same fingerprint. It does not hash file contents (reading ImageNet to hash it takes as
    long as caching it).
    """

    def __init__(self, root: str | Path, split: str | None = None):
        self.root = Path(root).expanduser()
        self.split = split
        folder = self.root / split if split else self.root
        if not folder.is_dir():
            hint = (
                f" (splits present: {sorted(p.name for p in self.root.iterdir() if p.is_dir())})"
                if (split and self.root.is_dir())
                else ""
            )
            raise FileNotFoundError(f"image folder not found: {folder}{hint}")
        self.folder = folder
        self.class_names = sorted(
            entry.name for entry in os.scandir(folder) if entry.is_dir() and not entry.name.startswith(".")
        )
        if not self.class_names:
            raise ValueError(
                f"no class folders in {folder}: expected {folder}/<class>/<image> "
                "(ImageNet layout: root/train/n01440764/*.JPEG)"
            )
        self._files: list[str] = []  # relative to self.folder, '/'-separated
        self._labels: list[int] = []
        for label, class_name in enumerate(self.class_names):
            for path in sorted(_images_under(folder / class_name)):
                self._files.append(path.relative_to(folder).as_posix())
                self._labels.append(label)
        if not self._files:
            raise ValueError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) under the class folders of {folder}")
        self.name = f"imagefolder:{self.root.name}" + (f"/{split}" if split else "")

    def __len__(self) -> int:
        return len(self._files)

    def __getitem__(self, i: int) -> Sample:
        i = check_index(i, len(self), self.name)
        path = self.folder / self._files[i]
        return Sample(image=decode_image(path, i, str(path)), label=self._labels[i], index=i)

    def label_of(self, i: int) -> int:
        return self._labels[check_index(i, len(self), self.name)]

    def path_of(self, i: int) -> Path:
        """The file of image ``i``."""
        return self.folder / self._files[check_index(i, len(self), self.name)]

    def fingerprint(self) -> dict[str, Any]:
        return {
            "kind": "imagefolder",
            "split": self.split,
            "n_images": len(self),
            "classes": self.class_names,
            "files_sha256": sha256_strings(
                f"{label}\t{path}" for path, label in zip(self._files, self._labels, strict=True)
            ),
        }


def _images_under(folder: Path) -> list[Path]:
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        found.extend(
            Path(dirpath) / f
            for f in filenames
            if not f.startswith(".") and Path(f).suffix.lower() in IMAGE_EXTENSIONS
        )
    return found
