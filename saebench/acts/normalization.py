"""Standardisation statistics of a store, computed streaming and saved beside it.

One pass accumulates per-dimension means and sums of squared deviations (Chan et al.'s pairwise merge, in
float64); a second pass accumulates the mean centred norm. From these, :func:`normalization` gives the
``(mean, scale)`` pair of each scheme, ready for ``SAE.set_input_normalization``
(``x_n = (x - mean) / scale``):

- ``"scalar"`` (USAE, usae.md §1.5; code ``universal_sae/data.py``): one mean and one std over every token
  and channel; ``x_n = (x - μ) / (σ + 1e-5)``.
- ``"per_dimension"``: ``x_n = (x_j - μ_j) / (σ_j + 1e-5)`` per channel ``j``.
- ``"target_norm_code"`` (MSAE code, msae.md §2.1): ``x_n = (x - μ)·s`` with ``s = √n / mean_i ‖x_i - μ‖²``
  (the mean *squared* norm, as the released code divides).
- ``"target_norm_paper"`` (MSAE paper reading, msae.md §2.1): ``s = √n / mean_i ‖x_i - μ‖``, so that
  the standardised data has ``E‖x_n‖ = √n``.

Standard deviations are unbiased (divide by ``count - 1``), as ``torch.std`` in the USAE code.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from saebench.acts.store import Store, to_float32_tensor

__all__ = [
    "NORMALIZATIONS",
    "STD_EPS",
    "ActivationStatistics",
    "compute_statistics",
    "array_statistics",
    "statistics_path",
    "save_statistics",
    "load_statistics",
    "store_statistics",
    "normalization",
]

NORMALIZATIONS: tuple[str, ...] = ("scalar", "per_dimension", "target_norm_code", "target_norm_paper")
#: Added to standard deviations before dividing, as USAE's ``(x - μ) / (σ + 1e-5)`` (usae.md §1.5).
STD_EPS = 1e-5


@dataclass(frozen=True)
class ActivationStatistics:
    """Statistics of the rows of one store (or of a seeded sample of its images).

    mean, std: ``(d,)`` per-dimension mean and unbiased std. scalar_mean, scalar_std: over all ``n_rows*d``
    values. mean_sq_centered_norm: ``mean_i ‖x_i - mean‖²``. mean_centered_norm: ``mean_i ‖x_i - mean‖``.
    sample: how the rows were chosen (``{"images": None | int, "seed": int}``; ``{}`` for an array),
    store_hash: the store's hash (``None`` for an array, :func:`array_statistics`).
    """

    n_rows: int
    mean: np.ndarray
    std: np.ndarray
    scalar_mean: float
    scalar_std: float
    mean_sq_centered_norm: float
    mean_centered_norm: float
    sample: dict[str, Any]
    store_hash: str | None

    @property
    def d(self) -> int:
        return int(self.mean.shape[0])

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_rows": self.n_rows,
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
            "scalar_mean": self.scalar_mean,
            "scalar_std": self.scalar_std,
            "mean_sq_centered_norm": self.mean_sq_centered_norm,
            "mean_centered_norm": self.mean_centered_norm,
            "sample": dict(self.sample),
            "store_hash": self.store_hash,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ActivationStatistics:
        values = dict(data)
        values["mean"] = np.asarray(data["mean"], dtype=np.float64)
        values["std"] = np.asarray(data["std"], dtype=np.float64)
        return cls(**values)


def _sample_rows(store: Store, images: int | None, seed: int) -> np.ndarray | None:
    """Sorted global row indices of ``images`` images drawn without replacement (``None``: every row)."""
    if images is None:
        return None
    if not 1 <= images <= store.n_images:
        raise ValueError(
            f"image sample of {images} must be between 1 and the store's {store.n_images} images"
        )
    chosen = np.sort(np.random.default_rng(seed).choice(store.n_images, size=images, replace=False))
    tokens = store.tokens_per_image
    return (chosen[:, None] * tokens + np.arange(tokens)[None, :]).reshape(-1)


def _chunks(store: Store, rows: np.ndarray | None, chunk_rows: int) -> Iterator[np.ndarray]:
    """float64 ``(n, d)`` chunks of the chosen rows, in row order."""
    n = store.n_rows if rows is None else len(rows)
    for a in range(0, n, chunk_rows):
        b = min(a + chunk_rows, n)
        raw = store.read_rows(a, b) if rows is None else store.take(rows[a:b])
        yield to_float32_tensor(raw, store.dtype).numpy().astype(np.float64)


def compute_statistics(
    store: Store, *, image_sample: int | None = None, seed: int = 0, chunk_rows: int = 1 << 15
) -> ActivationStatistics:
    """Stream over ``store`` (or ``image_sample`` images drawn with ``seed``, all their tokens; USAE uses
    1,000 random training images) and return its :class:`ActivationStatistics`."""
    rows = _sample_rows(store, image_sample, seed)
    return _statistics(
        lambda: _chunks(store, rows, chunk_rows),
        store.d,
        where=str(store.path),
        sample={"images": image_sample, "seed": seed if image_sample is not None else None},
        store_hash=store.content_hash,
    )


def array_statistics(rows: np.ndarray | torch.Tensor, *, chunk_rows: int = 1 << 15) -> ActivationStatistics:
    """:class:`ActivationStatistics` of in-memory (or memory-mapped) ``rows (n, d)``, read in float64 chunks
    (a ``np.memmap`` of millions of rows, e.g. MSAE's embedding files, is never loaded whole)."""
    if rows.ndim != 2:
        raise ValueError(f"rows must be (n, d), got shape {tuple(rows.shape)}")

    def chunks() -> Iterator[np.ndarray]:
        for a in range(0, rows.shape[0], chunk_rows):
            chunk = rows[a : a + chunk_rows]
            chunk = chunk.detach().cpu().numpy() if isinstance(chunk, torch.Tensor) else np.asarray(chunk)
            yield chunk.astype(np.float64)

    where = f"the {tuple(rows.shape)} array"
    return _statistics(chunks, rows.shape[1], where=where, sample={}, store_hash=None)


def _statistics(
    chunks: Callable[[], Iterator[np.ndarray]],
    d: int,
    *,
    where: str,
    sample: dict[str, Any],
    store_hash: str | None,
) -> ActivationStatistics:
    """Two passes over ``chunks()`` (float64 ``(n_b, d)``): means and sums of squares merged chunk by chunk
    (Chan et al.'s parallel update), then the mean centred row norm."""
    count, mean, m2 = 0, np.zeros(d), np.zeros(d)
    for x in chunks():
        n_b, mean_b = len(x), x.mean(axis=0)
        m2_b = ((x - mean_b) ** 2).sum(axis=0)
        delta, total = mean_b - mean, count + n_b
        mean = mean + delta * n_b / total
        m2 = m2 + m2_b + delta**2 * count * n_b / total
        count = total
    if count < 2:
        raise ValueError(f"statistics need at least 2 rows; {where} has {count}")
    norm_sum = sum(float(np.linalg.norm(x - mean, axis=1).sum()) for x in chunks())
    scalar_mean = float(mean.mean())
    scalar_m2 = float(m2.sum() + count * ((mean - scalar_mean) ** 2).sum())
    return ActivationStatistics(
        n_rows=count,
        mean=mean,
        std=np.sqrt(m2 / (count - 1)),
        scalar_mean=scalar_mean,
        scalar_std=math.sqrt(scalar_m2 / (count * d - 1)),
        mean_sq_centered_norm=float(m2.sum() / count),
        mean_centered_norm=norm_sum / count,
        sample=sample,
        store_hash=store_hash,
    )


def statistics_path(store: Store, image_sample: int | None = None, seed: int = 0) -> Path:
    """``<store>/statistics.json`` (whole store) or ``statistics-<images>img-seed<seed>.json`` (a sample)."""
    name = "statistics.json" if image_sample is None else f"statistics-{image_sample}img-seed{seed}.json"
    return store.path / name


def save_statistics(stats: ActivationStatistics, store: Store) -> Path:
    path = statistics_path(store, stats.sample["images"], stats.sample["seed"] or 0)
    path.write_text(json.dumps(stats.to_dict(), indent=2) + "\n", encoding="utf-8")
    return path


def load_statistics(store: Store, image_sample: int | None = None, seed: int = 0) -> ActivationStatistics:
    path = statistics_path(store, image_sample, seed)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; compute it with store_statistics(store)")
    stats = ActivationStatistics.from_dict(json.loads(path.read_text(encoding="utf-8")))
    if stats.store_hash != store.content_hash:
        raise ValueError(f"{path} belongs to store {stats.store_hash}, not {store.content_hash}; delete it")
    return stats


def store_statistics(store: Store, *, image_sample: int | None = None, seed: int = 0) -> ActivationStatistics:
    """The saved statistics of ``store`` for this sample, computing and saving them on first use."""
    if statistics_path(store, image_sample, seed).is_file():
        return load_statistics(store, image_sample, seed)
    stats = compute_statistics(store, image_sample=image_sample, seed=seed)
    save_statistics(stats, store)
    return stats


def normalization(stats: ActivationStatistics, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mean (d,), scale (d,))`` float32 tensors of scheme ``kind`` (one of :data:`NORMALIZATIONS`) so that
    the standardised input is ``(x - mean) / scale``; pass them to ``SAE.set_input_normalization``."""
    d = stats.d
    if kind == "scalar":
        mean, scale = np.full(d, stats.scalar_mean), np.full(d, stats.scalar_std + STD_EPS)
    elif kind == "per_dimension":
        mean, scale = stats.mean, stats.std + STD_EPS
    elif kind == "target_norm_code":
        mean, scale = stats.mean, np.full(d, stats.mean_sq_centered_norm / math.sqrt(d))
    elif kind == "target_norm_paper":
        mean, scale = stats.mean, np.full(d, stats.mean_centered_norm / math.sqrt(d))
    else:
        raise ValueError(f"unknown normalization {kind!r}; choose one of {', '.join(NORMALIZATIONS)}")
    return torch.as_tensor(mean, dtype=torch.float32), torch.as_tensor(scale, dtype=torch.float32)
