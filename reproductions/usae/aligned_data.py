"""Batches of whole images from an aligned group of activation stores, standardised per model.

The authors' batches are 32 images x 196 patch tokens of every model (usae.md §4.1), shuffled by image each
epoch; each model is standardised with one scalar mean and std taken over all tokens and channels of 1,000
random training images (§1.5). Here an :class:`~saebench.acts.store.AlignedStores` group (row ``t`` of image
``n`` is the same token in every model) is read by image: ``images`` are positions in the group's image order,
so the mini tier can train on some images of its one cached set and evaluate on the others.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import numpy as np
import torch

from saebench.acts.store import AlignedStores, to_float32_tensor
from saebench.data.multimodel import scalar_standardization_stats, scalar_standardize

__all__ = [
    "Stats",
    "image_rows",
    "read_images",
    "standardization_stats",
    "training_batches",
    "ordered_batches",
]

Stats = Mapping[str, tuple[float, float]]
"""``{model: (mean, std)}`` scalar standardisation statistics."""


def image_rows(images: np.ndarray, tokens_per_image: int) -> np.ndarray:
    """``(len(images) * T,)`` row indices of the images at positions ``images``, tokens in store order."""
    images = np.asarray(images, dtype=np.int64)
    return (images[:, None] * tokens_per_image + np.arange(tokens_per_image)[None, :]).reshape(-1)


def read_images(
    aligned: AlignedStores, images: np.ndarray, stats: Stats | None = None
) -> dict[str, torch.Tensor]:
    """``{model: (len(images) * T, d_model)}`` float32 rows of the given images, standardised with ``stats``
    (raw when ``stats`` is None)."""
    rows = image_rows(images, _tokens_per_image(aligned))
    out = {}
    for name, store in aligned.items():
        x = to_float32_tensor(store.take(rows), store.dtype)
        out[name] = x if stats is None else scalar_standardize(x, *stats[name])
    return out


def _tokens_per_image(aligned: AlignedStores) -> int:
    return next(iter(aligned.values())).tokens_per_image


def standardization_stats(
    aligned: AlignedStores, images: np.ndarray, n_images: int, seed: int
) -> dict[str, tuple[float, float]]:
    """Each model's scalar mean and std over every token and channel of ``n_images`` images drawn without
    replacement from ``images`` (all of them when fewer), with ``numpy.random.default_rng(seed)``."""
    images = np.asarray(images, dtype=np.int64)
    if n_images < len(images):
        images = np.sort(np.random.default_rng(seed).choice(images, size=n_images, replace=False))
    return {name: scalar_standardization_stats(x) for name, x in read_images(aligned, images).items()}


def training_batches(
    aligned: AlignedStores, images: np.ndarray, images_per_batch: int, steps: int, stats: Stats, seed: int
) -> Iterator[dict[str, torch.Tensor]]:
    """``steps`` batches of ``images_per_batch`` whole images each, standardised: every epoch is a fresh
    permutation of ``images`` (``default_rng((seed, epoch))``) and drops its last partial batch, as a shuffled
    ``DataLoader(drop_last=True)``."""
    images = np.asarray(images, dtype=np.int64)
    if not 0 < images_per_batch <= len(images):
        raise ValueError(
            f"images_per_batch must be in [1, {len(images)}] (the training images), got {images_per_batch}"
        )
    done, epoch = 0, 0
    while done < steps:
        order = np.random.default_rng((seed, epoch)).permutation(images)
        for first in range(0, len(order) - images_per_batch + 1, images_per_batch):
            if done == steps:
                return
            yield read_images(aligned, order[first : first + images_per_batch], stats)
            done += 1
        epoch += 1


def ordered_batches(
    aligned: AlignedStores, images: np.ndarray, images_per_batch: int, stats: Stats
) -> Iterator[dict[str, torch.Tensor]]:
    """Standardised batches of ``images_per_batch`` images in the given order (the last may be smaller)."""
    images = np.asarray(images, dtype=np.int64)
    for first in range(0, len(images), images_per_batch):
        yield read_images(aligned, images[first : first + images_per_batch], stats)
