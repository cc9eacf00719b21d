"""Batches of cached activations for training and evaluation, read from a :class:`~saebench.acts.store.Store`
or an :class:`~saebench.acts.store.AlignedStores` group.

- :class:`ShuffledLoader`: a shuffled epoch from contiguous chunk reads into a shuffle buffer; deterministic
  by ``(seed, epoch)``; resumable mid-epoch from :meth:`ShuffledLoader.state_dict`.
- :class:`OrderedLoader`: rows in store order.
- :class:`ByImageLoader`: all tokens of each image together, ``(images, tokens, d)``, for patch maps.

Every loader yields float32 tensors ``(batch, d)``; over an aligned group it yields ``dict model -> (batch,
d_model)`` with the same (image, token) in row ``i`` of every model, the batch format of USAE
(usae.md §1: each step encodes one model's batch and decodes it into every model).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, NamedTuple

import numpy as np
import torch

from saebench.acts.store import AlignedStores, Store, to_float32_tensor

__all__ = ["Batch", "ImageBatch", "shuffle_windows", "ShuffledLoader", "OrderedLoader", "ByImageLoader"]

#: What a loader yields: one tensor for a single store, a dict model -> tensor for an aligned group.
Batch = torch.Tensor | dict[str, torch.Tensor]


class _RowReader:
    """Uniform access to the rows of one store or of an aligned group (same rows in every member)."""

    def __init__(self, source: Store | AlignedStores):
        if not isinstance(source, (Store, AlignedStores)):
            raise TypeError(f"loaders read a Store or AlignedStores, got {type(source).__name__}")
        self.single = isinstance(source, Store)
        self.stores: dict[str, Store] = {"": source} if self.single else dict(source)
        self.n_rows = source.n_rows

    def read(self, start: int, stop: int) -> dict[str, np.ndarray]:
        return {name: store.read_rows(start, stop) for name, store in self.stores.items()}

    def batch(self, buffers: dict[str, np.ndarray]) -> Batch:
        out = {name: to_float32_tensor(buf, self.stores[name].dtype) for name, buf in buffers.items()}
        return out[""] if self.single else out


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if int(value) < 1:
            raise ValueError(f"{name} must be a positive integer, got {value}")


def shuffle_windows(
    n_rows: int, chunk_rows: int, buffer_rows: int, seed: int, epoch: int
) -> list[list[tuple[int, int]]]:
    """The read plan of one shuffled epoch: a list of windows, each a list of ``(start, stop)`` row chunks.

    Rows are cut into contiguous chunks of ``chunk_rows``; the chunks are permuted by
    ``numpy.random.default_rng((seed, epoch))`` and grouped, in that order, into windows of
    ``max(1, buffer_rows // chunk_rows)`` chunks. A window is what the shuffle buffer holds at once.
    """
    _check_positive(chunk_rows=chunk_rows, buffer_rows=buffer_rows)
    chunks = [(a, min(a + chunk_rows, n_rows)) for a in range(0, n_rows, chunk_rows)]
    order = np.random.default_rng((seed, epoch)).permutation(len(chunks))
    per_window = max(1, buffer_rows // chunk_rows)
    return [[chunks[i] for i in order[w : w + per_window]] for w in range(0, len(chunks), per_window)]


class ShuffledLoader:
    """Shuffled batches, every row exactly once per epoch (``drop_last`` drops the final partial batch).

    Each window of :func:`shuffle_windows` is read chunk by chunk (contiguous reads) into a buffer whose rows
    are permuted by ``default_rng((seed, epoch, window))``. Batches are consecutive slices of the
    concatenated permuted windows, so a batch may span two windows and the stream is the same however it
    is consumed. Iterating yields the rest of the current epoch, then advances to the next epoch;
    :meth:`state_dict` / :meth:`load_state_dict` resume at the exact next batch.

    buffer_rows: shuffle-buffer size in rows (memory: ``buffer_rows * d * bytes_per_value`` per model).
    chunk_rows: rows per contiguous read; smaller chunks mix better, larger chunks read faster.
    """

    def __init__(
        self,
        source: Store | AlignedStores,
        batch_size: int,
        *,
        seed: int = 0,
        buffer_rows: int = 1 << 18,
        chunk_rows: int = 1 << 13,
        drop_last: bool = False,
    ):
        _check_positive(batch_size=batch_size, buffer_rows=buffer_rows, chunk_rows=chunk_rows)
        self._reader = _RowReader(source)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.buffer_rows = int(buffer_rows)
        self.chunk_rows = int(chunk_rows)
        self.drop_last = drop_last
        self.epoch = 0
        self.rows_consumed = 0

    def __len__(self) -> int:
        """Batches per epoch."""
        n = self._reader.n_rows
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Start ``epoch`` from its beginning."""
        self.epoch, self.rows_consumed = int(epoch), 0

    def state_dict(self) -> dict[str, int]:
        return {"seed": self.seed, "epoch": self.epoch, "rows_consumed": self.rows_consumed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if int(state["seed"]) != self.seed:
            raise ValueError(
                f"loader state was saved with seed {state['seed']}, this loader has seed {self.seed}"
            )
        consumed = int(state["rows_consumed"])
        if consumed % self.batch_size and consumed != self._reader.n_rows:
            raise ValueError(
                f"rows_consumed={consumed} is not a batch boundary for batch_size={self.batch_size}"
            )
        self.epoch, self.rows_consumed = int(state["epoch"]), consumed

    def _stream(self, start: int) -> Iterator[Batch]:
        """Batches of the current epoch's permuted row stream from stream position ``start``."""
        reader, size = self._reader, self.batch_size
        windows = shuffle_windows(reader.n_rows, self.chunk_rows, self.buffer_rows, self.seed, self.epoch)
        carry: dict[str, np.ndarray] | None = None
        window_start = 0
        for w, chunks in enumerate(windows):
            n_window = sum(b - a for a, b in chunks)
            if window_start + n_window <= start:
                window_start += n_window
                continue
            pieces = [reader.read(a, b) for a, b in chunks]
            buffers = {name: np.concatenate([p[name] for p in pieces]) for name in reader.stores}
            perm = np.random.default_rng((self.seed, self.epoch, w)).permutation(n_window)
            i = max(0, start - window_start)
            window_start += n_window
            if carry is not None:
                take = perm[i : i + size - len(next(iter(carry.values())))]
                i += len(take)
                carry = {name: np.concatenate([carry[name], buffers[name][take]]) for name in buffers}
                if len(next(iter(carry.values()))) < size:
                    continue
                yield reader.batch(carry)
                carry = None
            while i + size <= n_window:
                yield reader.batch({name: buf[perm[i : i + size]] for name, buf in buffers.items()})
                i += size
            if i < n_window:
                carry = {name: buf[perm[i:]] for name, buf in buffers.items()}
        if carry is not None and not self.drop_last:
            yield reader.batch(carry)

    def __iter__(self) -> Iterator[Batch]:
        for batch in self._stream(self.rows_consumed):
            rows = len(batch) if isinstance(batch, torch.Tensor) else len(next(iter(batch.values())))
            self.rows_consumed += rows
            yield batch
        self.set_epoch(self.epoch + 1)

    def epochs(self, n_epochs: int | None = None) -> Iterator[Batch]:
        """Batches over ``n_epochs`` epochs from the current position (forever when ``None``)."""
        done = 0
        while n_epochs is None or done < n_epochs:
            yield from self
            done += 1


class OrderedLoader:
    """Batches of rows ``[start_row, stop_row)`` in store order (the last batch may be smaller)."""

    def __init__(
        self,
        source: Store | AlignedStores,
        batch_size: int,
        *,
        start_row: int = 0,
        stop_row: int | None = None,
    ):
        _check_positive(batch_size=batch_size)
        self._reader = _RowReader(source)
        self.batch_size = int(batch_size)
        self.start_row = int(start_row)
        self.stop_row = self._reader.n_rows if stop_row is None else int(stop_row)
        if not 0 <= self.start_row <= self.stop_row <= self._reader.n_rows:
            n = self._reader.n_rows
            raise ValueError(f"rows [{self.start_row}, {self.stop_row}) are not within the {n} stored rows")

    def __len__(self) -> int:
        return -(-(self.stop_row - self.start_row) // self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        for a in range(self.start_row, self.stop_row, self.batch_size):
            yield self._reader.batch(self._reader.read(a, min(a + self.batch_size, self.stop_row)))


class ImageBatch(NamedTuple):
    """All tokens of ``n`` images: ``acts (n, tokens_per_image, d)`` float32 (token order as in the store,
    row-major over the token grid for patch tokens), ``image_index (n,)`` dataset indices, ``label (n,)``."""

    acts: torch.Tensor
    image_index: torch.Tensor
    label: torch.Tensor


class ByImageLoader:
    """Batches of whole images, in store order: :class:`ImageBatch` of up to ``images_per_batch`` images."""

    def __init__(self, store: Store, images_per_batch: int):
        if not isinstance(store, Store):
            raise TypeError(f"ByImageLoader reads one Store, got {type(store).__name__}")
        _check_positive(images_per_batch=images_per_batch)
        self.store = store
        self.images_per_batch = int(images_per_batch)

    def __len__(self) -> int:
        return -(-self.store.n_images // self.images_per_batch)

    def __iter__(self) -> Iterator[ImageBatch]:
        tokens, n_images = self.store.tokens_per_image, self.store.n_images
        for first in range(0, n_images, self.images_per_batch):
            last = min(first + self.images_per_batch, n_images)
            acts = self.store.rows(first * tokens, last * tokens).reshape(last - first, tokens, self.store.d)
            index = torch.from_numpy(self.store.index(first * tokens, last * tokens)[::tokens])
            yield ImageBatch(acts=acts, image_index=index[:, 0].clone(), label=index[:, 2].clone())
