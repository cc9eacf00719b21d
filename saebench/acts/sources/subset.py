"""Deterministic subsets of an image source: the first N images, and/or the first N images of each class."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from saebench.acts.sources.base import UNLABELED, ImageSource, Sample, UnreadableImageError, check_index


class SubsetSource:
    """The images of ``parent`` at ``indices`` (in that order); ``Sample.index`` stays the parent's index."""

    def __init__(self, parent: ImageSource, indices: list[int], spec: dict[str, Any]):
        self.parent = parent
        self.indices = indices
        self.spec = spec
        self.name = parent.name

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> Sample:
        return self.parent[self.indices[check_index(i, len(self), f"subset of {self.name}")]]

    def label_of(self, i: int) -> int:
        return _label(self.parent, self.indices[check_index(i, len(self), f"subset of {self.name}")])

    def fingerprint(self) -> dict[str, Any]:
        digest = hashlib.sha256(np.asarray(self.indices, dtype=np.int64).tobytes()).hexdigest()
        return {
            "kind": "subset",
            **self.spec,
            "n_images": len(self),
            "indices_sha256": digest,
            "parent": self.parent.fingerprint(),
        }


def _label(source: ImageSource, i: int) -> int:
    label_of = getattr(source, "label_of", None)
    if label_of is not None:
        return label_of(i)
    try:
        return source[i].label
    except UnreadableImageError as err:
        raise ValueError(
            f"{source.name} has no label_of(); image {i} must be decoded for its label: {err}"
        ) from err


def _check_count(value: int | None, what: str) -> None:
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value <= 0):
        raise ValueError(f"subset {what} must be a positive int or None, got {value!r}")


def subset(source: ImageSource, first_n: int | None = None, per_class: int | None = None) -> SubsetSource:
    """A deterministic subset of ``source``, recorded in its fingerprint.

    ``per_class=k`` keeps the first k images (in source order) of each label; ``first_n=n`` then keeps the
    first n of what remains. The result is in source order. No randomness: the same source gives the same
    subset.
    A class with fewer than k images keeps all of them.
    """
    _check_count(first_n, "first_n")
    _check_count(per_class, "per_class")
    if first_n is None and per_class is None:
        raise ValueError("subset needs first_n, per_class or both")
    if per_class is None:
        indices = list(range(min(first_n, len(source))))
    else:
        counts: dict[int, int] = {}
        indices = []
        for i in range(len(source)):
            label = _label(source, i)
            if label == UNLABELED:
                raise ValueError(f"per_class subsets need labels; image {i} of {source.name} is unlabelled")
            if counts.get(label, 0) < per_class:
                counts[label] = counts.get(label, 0) + 1
                indices.append(i)
                if len(indices) == first_n:
                    break
    return SubsetSource(source, indices, {"first_n": first_n, "per_class": per_class})
