"""The cache runner: images -> backbone hooks -> selected tokens -> a content-hashed store.

The store format is specified in ``docs/cache-format.md``. :func:`cache_activations` batches a source's images
through ``backbone.extract`` under ``torch.inference_mode`` and commits one shard at a time. It is

- **resumable**: a re-run with the same arguments skips committed shards; shards and forward batches are
  fixed by the layout (not by where a run stopped), so the result is byte-identical to an uninterrupted run;
- **distributed**: under ``torchrun`` rank ``r`` of ``W`` writes the contiguous block of shards
  :meth:`~saebench.acts.store.ShardLayout.rank_shards` gives it, and rank 0 merges the shard records into
  ``metadata.json`` after a barrier, so the store equals a single-process run's (same rows, same order);
- **honest about bad images**: an image the source cannot read
  (:class:`~saebench.acts.sources.UnreadableImageError`, or an ``OSError`` while decoding it) is skipped
  and listed in the metadata with its position and error.
"""

from __future__ import annotations

import dataclasses
import enum
import itertools
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from tqdm.auto import tqdm

from saebench.acts.backbones.core import Backbone, HookPoint
from saebench.acts.sources import UnreadableImageError
from saebench.acts.store import (
    FORMAT_VERSION,
    STORAGE_DTYPES,
    CorruptShardError,
    IncompleteStoreError,
    ShardLayout,
    Store,
    StoreWriter,
)
from saebench.acts.tokens import (
    SELECTIONS,
    TokenLayout,
    resize_grid,
    select_tokens,
    selected_layout,
    selected_token_indices,
)
from saebench.train import distributed

__all__ = ["DEFAULT_SHARD_ROWS", "store_spec", "cache_activations"]

#: 65,536 rows: 96 MiB per shard at d=768 in float16.
DEFAULT_SHARD_ROWS = 1 << 16


# ----------------------------------------------------------------------------------- the spec
def _plain(obj: Any) -> Any:
    """``obj`` as plain JSON values (dataclasses -> dicts, tuples -> lists, enums -> values, paths -> str)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, enum.Enum):
        return _plain(obj.value)
    if isinstance(obj, Path):
        return str(obj)
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot record {type(obj).__name__} {obj!r} in a store spec; use plain JSON values")


def store_spec(
    backbone: Backbone, hook: str, source: Any, *, tokens: str, grid: tuple[int, int] | None, dtype: str
) -> dict[str, Any]:
    """Everything that determines a store's content; its :func:`~saebench.acts.store.content_hash` names the
    folder (``docs/cache-format.md`` section 1). The backbone fingerprint carries the weights' digests, the
    hook's definition and the preprocessing; the source fingerprint carries the subset."""
    point = backbone.resolve_hook(hook)
    return {
        "format_version": FORMAT_VERSION,
        "backbone": _plain(backbone.fingerprint([point.name])),
        "hook": point.name,
        "tokens": {"selection": tokens, "grid": list(grid) if grid is not None else None},
        "dataset": _plain(source.fingerprint()),
        "n_images": len(source),
        "dtype": dtype,
    }


class _RowShape(NamedTuple):
    """The rows one image gives at one hook: token positions (``token_index`` column) and the stored grid."""

    token_index: np.ndarray  # (tokens_per_image,) int64
    token_grid: tuple[int, int] | None


def _row_shape(point: HookPoint, tokens: str, grid: tuple[int, int] | None) -> _RowShape:
    """Token positions in the hook's ``[cls, registers, patches]`` sequence (after the grid resize, if any;
    ``POOLED_TOKEN_INDEX`` for a mean-pooled row) and the patch grid of the stored rows."""
    layout = point.layout
    if grid is not None:
        if tokens != "patches" or layout.grid is None:
            raise ValueError(
                f"a grid resize needs tokens='patches' on a hook with a patch grid; hook {point.name!r} has "
                f"layout {layout} and tokens={tokens!r}"
            )
        layout = TokenLayout(n_cls=layout.n_cls, n_registers=layout.n_registers, grid=grid)
    positions = np.asarray(selected_token_indices(layout, tokens), dtype=np.int64)
    return _RowShape(positions, selected_layout(layout, tokens).grid)


def _check_arguments(tokens: str, dtype: str, batch_size: int, shard_rows: int, workers: int) -> None:
    if tokens not in SELECTIONS:
        raise ValueError(f"unknown token selection {tokens!r}; choose one of {', '.join(SELECTIONS)}")
    if dtype not in STORAGE_DTYPES:
        raise ValueError(f"unknown activation dtype {dtype!r}; choose one of {', '.join(STORAGE_DTYPES)}")
    if batch_size < 1 or shard_rows < 1 or workers < 0:
        raise ValueError(
            f"need batch_size >= 1, shard_rows >= 1 and workers >= 0; "
            f"got {batch_size}, {shard_rows}, {workers}"
        )


# ------------------------------------------------------------------------------- the forward
class _LoadedBatch(NamedTuple):
    images: torch.Tensor | None  # (n, 3, H, W); None when every image of the batch was unreadable
    image_index: list[int]
    label: list[int]
    skipped: list[dict[str, Any]]


def _load_batch(source: Any, transform: Callable[[Any], torch.Tensor], positions: range) -> _LoadedBatch:
    """Read and preprocess the images at ``positions``; unreadable ones are listed in ``skipped``."""
    images, index, labels, skipped = [], [], [], []
    for position in positions:
        try:
            sample = source[position]
            images.append(transform(sample.image))
        except (UnreadableImageError, OSError) as err:
            skipped.append({"position": position, "error": f"{type(err).__name__}: {err}"})
            continue
        index.append(int(sample.index))
        labels.append(int(sample.label))
    return _LoadedBatch(torch.stack(images) if images else None, index, labels, skipped)


def _prefetched(load: Callable[[Any], Any], items: Iterable[Any], workers: int) -> Iterator[tuple[Any, Any]]:
    """``(item, load(item))`` in order, loading up to ``2 * workers`` items ahead in threads (0: inline)."""
    if workers == 0:
        for item in items:
            yield item, load(item)
        return
    queue = iter(items)
    pending: deque = deque()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for item in itertools.islice(queue, 2 * workers):
            pending.append((item, pool.submit(load, item)))
        while pending:
            item, future = pending.popleft()
            for following in itertools.islice(queue, 1):
                pending.append((following, pool.submit(load, following)))
            yield item, future.result()


def _extract(
    backbone: Backbone,
    images: torch.Tensor,
    points: dict[str, HookPoint],
    tokens: str,
    grid: tuple[int, int] | None,
) -> dict[str, torch.Tensor]:
    """``hook -> (n * tokens_per_image, d)`` CPU rows of the selected (and grid-resized) tokens."""
    with torch.inference_mode():
        acts = backbone.extract(images, [point.name for point in points.values()])
        rows = {}
        for hook, point in points.items():
            selected = select_tokens(acts[point.name], point.layout, tokens)
            if grid is not None:
                selected = resize_grid(selected, point.layout.grid, grid)
            rows[hook] = selected.reshape(-1, selected.shape[-1]).to("cpu")
    return rows


def _index_rows(image_index: list[int], labels: list[int], token_index: np.ndarray) -> np.ndarray:
    """``(n * tokens_per_image, 3)`` int64 rows of (image index, token index, label)."""
    n, per_image = len(image_index), len(token_index)
    return np.stack(
        [
            np.repeat(np.asarray(image_index, dtype=np.int64), per_image),
            np.tile(token_index, n),
            np.repeat(np.asarray(labels, dtype=np.int64), per_image),
        ],
        axis=1,
    )


# --------------------------------------------------------------------------------- the runner
def _completed_stores(writers: dict[str, StoreWriter]) -> dict[str, Store] | None:
    """Every hook's store when all are complete with intact file sizes, else ``None`` (work remains)."""
    stores = {}
    for hook, writer in writers.items():
        try:
            stores[hook] = Store(writer.path, verify="lazy")
        except (FileNotFoundError, IncompleteStoreError, CorruptShardError):
            return None
    return stores


def cache_activations(
    backbone: Backbone,
    source: Any,
    hooks: str | Sequence[str],
    *,
    tokens: str = "patches",
    grid: tuple[int, int] | None = None,
    out_root: str | Path,
    batch_size: int = 64,
    dtype: str = "float16",
    shard_rows: int = DEFAULT_SHARD_ROWS,
    workers: int = 1,
    progress: bool = True,
) -> Store | dict[str, Store]:
    """Cache ``source``'s activations at ``hooks`` of ``backbone`` into ``out_root/<content hash>/``.

    backbone: a :class:`~saebench.acts.backbones.core.Backbone` (the forward runs on its device). source: an
    image source (``len``, ``[i] -> Sample``, ``fingerprint()``), e.g. a ``subset``. hooks: one hook name or
    several (one forward pass feeds one store per hook; they must give the same number of tokens per image).
    tokens: a selection of :data:`saebench.acts.tokens.SELECTIONS`; grid: resize the patch grid to
    ``(rows, cols)`` (bilinear, antialiased; USAE resizes DINOv2's 16x16 to 14x14, usae.md §1.6).
    dtype: row dtype on disk. shard_rows: target rows per shard; a shard holds
    ``max(1, shard_rows // tokens_per_image)`` whole images. workers: threads that read and preprocess the
    next batches while the model runs (0: inline).

    Returns the :class:`~saebench.acts.store.Store`, or a dict ``hook -> Store`` when ``hooks`` is a sequence.
    A re-run with the same arguments returns the finished stores at once, or finishes interrupted ones.
    """
    hook_names = [hooks] if isinstance(hooks, str) else list(hooks)
    if not hook_names:
        raise ValueError(f"no hook given; valid hooks: {backbone.describe_hooks()}")
    _check_arguments(tokens, dtype, batch_size, shard_rows, workers)
    grid = (int(grid[0]), int(grid[1])) if grid is not None else None
    points = {hook: backbone.resolve_hook(hook) for hook in hook_names}
    if len({p.name for p in points.values()}) != len(points):
        raise ValueError(f"hooks {hook_names} name the same hook point more than once; give each once")
    shapes = {hook: _row_shape(point, tokens, grid) for hook, point in points.items()}
    per_image = {hook: len(shape.token_index) for hook, shape in shapes.items()}
    if len(set(per_image.values())) != 1:
        raise ValueError(
            f"hooks give different numbers of tokens per image {per_image}; cache them in separate runs"
        )
    tokens_per_image = next(iter(per_image.values()))
    layout = ShardLayout(len(source), max(1, shard_rows // tokens_per_image), batch_size)
    writers = {
        hook: StoreWriter(
            out_root,
            store_spec(backbone, hook, source, tokens=tokens, grid=grid, dtype=dtype),
            d=point.width,
            dtype=dtype,
            tokens_per_image=tokens_per_image,
            token_grid=shapes[hook].token_grid,
            layout=layout,
        )
        for hook, point in points.items()
    }

    def result(stores: dict[str, Store]) -> Store | dict[str, Store]:
        return stores[hooks] if isinstance(hooks, str) else stores

    finished = _completed_stores(writers)
    if finished is not None:
        return result(finished)
    group_existed = torch.distributed.is_available() and torch.distributed.is_initialized()
    ctx = distributed.init_from_env()  # a world of one outside torchrun
    try:
        if ctx.is_main:
            for writer in writers.values():
                writer.prepare()
        distributed.barrier()
        _write_rank_shards(
            backbone,
            source,
            writers,
            points,
            shapes,
            tokens=tokens,
            grid=grid,
            workers=workers,
            progress=progress and ctx.is_main,
            shards=layout.rank_shards(ctx.rank, ctx.world_size),
        )
        distributed.barrier()
        if ctx.is_main:
            for writer in writers.values():
                writer.finalize()
        distributed.barrier()
        return result({hook: Store(writer.path, verify="lazy") for hook, writer in writers.items()})
    finally:
        if ctx.enabled and not group_existed:
            distributed.cleanup()


def _write_rank_shards(
    backbone: Backbone,
    source: Any,
    writers: dict[str, StoreWriter],
    points: dict[str, HookPoint],
    shapes: dict[str, _RowShape],
    *,
    tokens: str,
    grid: tuple[int, int] | None,
    workers: int,
    progress: bool,
    shards: range,
) -> None:
    """Compute and commit the uncommitted shards among ``shards`` for every hook's store."""
    layout = next(iter(writers.values())).layout
    committed = {hook: set(writer.committed()) for hook, writer in writers.items()}
    todo = [k for k in shards if any(k not in done for done in committed.values())]
    batches = [(k, positions) for k in todo for positions in layout.batches(k)]
    transform = backbone.preprocessing.transform()
    images_in = [len(layout.shard_positions(k)) for k in shards]
    bar = tqdm(
        total=sum(images_in),
        initial=sum(images_in) - sum(len(layout.shard_positions(k)) for k in todo),
        unit="img",
        desc=f"cache {backbone.name}",
        disable=not progress,
    )
    rows: dict[str, list[torch.Tensor]] = {hook: [] for hook in writers}
    loaded_images: list[_LoadedBatch] = []
    with bar:
        for (shard, positions), loaded in _prefetched(
            lambda b: _load_batch(source, transform, b[1]), batches, workers
        ):
            if loaded.images is not None:
                for hook, acts in _extract(backbone, loaded.images, points, tokens, grid).items():
                    rows[hook].append(acts)
            loaded_images.append(loaded)
            bar.update(len(positions))
            if positions.stop != layout.shard_positions(shard).stop:
                continue
            image_index = [i for b in loaded_images for i in b.image_index]
            labels = [label for b in loaded_images for label in b.label]
            skipped = [s for b in loaded_images for s in b.skipped]
            for hook, writer in writers.items():
                if shard not in committed[hook]:
                    acts = torch.cat(rows[hook]) if rows[hook] else torch.empty(0, writer.d)
                    writer.write_shard(
                        shard, acts, _index_rows(image_index, labels, shapes[hook].token_index), skipped
                    )
            rows = {hook: [] for hook in writers}
            loaded_images = []
