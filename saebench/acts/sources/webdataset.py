"""Image–caption pairs in webdataset tar shards (the CC3M layout: ``NNNN.jpg`` + ``NNNN.txt`` per sample).

Webdataset groups the tar members of one sample by key: the member path up to the first dot of its file name
(``00/000123.jpg`` and ``00/000123.txt`` form sample ``00/000123``). A sample needs one image member
(``jpg/jpeg/png/webp/bmp``); ``txt`` is its caption and ``cls`` its integer label, both optional. Keys without
an image (e.g. ``.json`` metadata only) are not images; their count is kept in ``n_keys_without_image``.

Shards must be uncompressed ``.tar`` files, so any sample can be read with one seek (no sequential scan).
"""

from __future__ import annotations

import glob
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from saebench.acts.sources.base import UNLABELED, Sample, check_index, decode_image, sha256_strings

IMAGE_KEYS = ("jpg", "jpeg", "png", "webp", "bmp")


@dataclass(frozen=True)
class _Member:
    shard: int
    offset: int
    size: int
    name: str


def _split_key(member_name: str) -> tuple[str, str]:
    directory, _, filename = member_name.rpartition("/")
    stem, dot, extension = filename.partition(".")
    prefix = f"{directory}/" if directory else ""
    return prefix + stem, extension.lower() if dot else ""


def expand_shards(shards: str | Path | Sequence[str | Path]) -> list[Path]:
    """Shard paths from a list, a directory (its ``*.tar`` files, sorted) or a glob pattern (sorted)."""
    if isinstance(shards, (str, Path)):
        text = str(shards)
        if Path(text).is_dir():
            paths = sorted(Path(text).glob("*.tar"))
        elif any(ch in text for ch in "*?["):
            paths = [Path(p) for p in sorted(glob.glob(text))]
        else:
            paths = [Path(text)]
    else:
        paths = [Path(p) for p in shards]
    if not paths:
        raise FileNotFoundError(f"no tar shards match {shards!r}")
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"tar shards not found: {', '.join(missing[:5])}")
    return paths


class WebDatasetSource:
    """Samples of one or more webdataset tar shards, in shard order then member order.

    Args:
        shards: a list of ``.tar`` paths, a directory of them, or a glob pattern (``"cc3m/*.tar"``).
        name: the source name (default: ``webdataset:<first shard's folder>``).
    """

    def __init__(self, shards: str | Path | Sequence[str | Path], name: str | None = None):
        self.shards = expand_shards(shards)
        self.name = name or f"webdataset:{self.shards[0].parent.name}"
        self._keys: list[str] = []
        self._images: list[_Member] = []
        self._captions: list[_Member | None] = []
        self._labels: list[_Member | None] = []
        self.n_keys_without_image = 0
        for shard_index, shard in enumerate(self.shards):
            self._index_shard(shard_index, shard)
        if not self._images:
            raise ValueError(f"no images ({', '.join(IMAGE_KEYS)}) in the tar shards {self.shards[0]}...")

    def _index_shard(self, shard_index: int, shard: Path) -> None:
        groups: dict[str, dict[str, _Member]] = {}
        try:
            with tarfile.open(shard, mode="r:") as archive:
                for info in archive:
                    if info.isfile():
                        key, extension = _split_key(info.name)
                        groups.setdefault(key, {})[extension] = _Member(
                            shard_index, info.offset_data, info.size, info.name
                        )
        except tarfile.ReadError as err:
            raise ValueError(
                f"{shard} is not an uncompressed tar file ({err}); decompress .tar.gz shards"
            ) from err
        for key, members in groups.items():
            image = next((members[ext] for ext in IMAGE_KEYS if ext in members), None)
            if image is None:
                self.n_keys_without_image += 1
                continue
            self._keys.append(f"{shard.name}:{key}")
            self._images.append(image)
            self._captions.append(members.get("txt"))
            self._labels.append(members.get("cls"))

    def __len__(self) -> int:
        return len(self._images)

    def _read(self, member: _Member) -> bytes:
        with open(self.shards[member.shard], "rb") as handle:
            handle.seek(member.offset)
            return handle.read(member.size)

    def __getitem__(self, i: int) -> Sample:
        i = check_index(i, len(self), self.name)
        member = self._images[i]
        origin = f"{self.shards[member.shard]}:{member.name}"
        caption = self._captions[i]
        return Sample(
            image=decode_image(self._read(member), i, origin),
            label=self.label_of(i),
            index=i,
            caption=None if caption is None else self._read(caption).decode("utf-8").strip(),
        )

    def label_of(self, i: int) -> int:
        member = self._labels[check_index(i, len(self), self.name)]
        if member is None:
            return UNLABELED
        text = self._read(member).decode("utf-8").strip()
        try:
            return int(text)
        except ValueError as err:
            raise ValueError(
                f"{self.shards[member.shard]}:{member.name} holds {text!r}, not an int label"
            ) from err

    def key_of(self, i: int) -> str:
        """``shard_name:key`` of sample ``i``."""
        return self._keys[check_index(i, len(self), self.name)]

    def fingerprint(self) -> dict[str, Any]:
        return {
            "kind": "webdataset",
            "shards": [shard.name for shard in self.shards],
            "shard_bytes": [shard.stat().st_size for shard in self.shards],
            "n_images": len(self),
            "n_keys_without_image": self.n_keys_without_image,
            "keys_sha256": sha256_strings(self._keys),
        }
