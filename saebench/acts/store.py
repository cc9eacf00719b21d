"""The on-disk activation store: content-hashed folders of memmap shards with checksums.

``docs/cache-format.md`` is the normative specification of this format; where this module and the
document disagree, this module is wrong. Summary of a store folder ``<root>/<content_hash>/``::

    metadata.json               # format version, the hashed spec, shapes, counts, skipped images, shard list
    shards/acts-000000.bin      # (rows, d) activations, little-endian float32 / float16 / bfloat16-as-uint16
    shards/index-000000.bin     # (rows, 3) little-endian int64: image_index, token_index, label
    shards/shard-000000.json    # the shard's commit record (rows, sizes, sha256 of both files)

Writers (:class:`StoreWriter`) commit one shard at a time: data files go to a temporary name, are fsynced
and renamed, and only then is the commit record written the same way. A shard without a commit record
does not exist, so an interruption at any moment leaves neither duplicate nor missing rows.
Readers (:class:`Store`) check every shard's size at open and its sha256 at open or at first use.
:class:`AlignedStores` groups stores of several models over the same images in the same order (USAE).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "STORAGE_DTYPES",
    "INDEX_COLUMNS",
    "VERIFY_MODES",
    "StoreError",
    "CorruptShardError",
    "IncompleteStoreError",
    "StoreMismatchError",
    "ShardLayout",
    "ShardRecord",
    "canonical_json",
    "content_hash",
    "to_float32_tensor",
    "StoreWriter",
    "Store",
    "AlignedStores",
]

FORMAT_NAME = "saebench-activations"
FORMAT_VERSION = 1
#: Row dtype name -> numpy dtype of the bytes on disk (bfloat16 is stored as its raw uint16 bit pattern).
STORAGE_DTYPES: dict[str, str] = {"float32": "<f4", "float16": "<f2", "bfloat16": "<u2"}
INDEX_COLUMNS: tuple[str, ...] = ("image_index", "token_index", "label")
INDEX_DTYPE = "<i8"
#: ``open``: hash every shard when the store is opened; ``lazy``: hash a shard the first time it is read;
#: ``none``: sizes only.
VERIFY_MODES: tuple[str, ...] = ("open", "lazy", "none")
METADATA_FILE = "metadata.json"
SHARD_DIR = "shards"
_HASH_BLOCK = 1 << 22
_FIX_HINT = "delete it and re-run `saebench cache` with the same arguments to rewrite it"


class StoreError(RuntimeError):
    """A store folder is unusable as it stands; the message says what is wrong and what to do."""


class CorruptShardError(StoreError):
    """A shard file is missing, truncated or fails its sha256 check."""


class IncompleteStoreError(StoreError):
    """The store's caching run has not finished (some shards are not committed yet)."""


class StoreMismatchError(StoreError):
    """An existing store folder or a group of aligned stores disagrees with what was asked for."""


# --------------------------------------------------------------------------------------- hashing
def canonical_json(obj: Any) -> str:
    """The canonical JSON text of ``obj`` (sorted keys, no whitespace, ASCII, no NaN) that gets hashed."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def content_hash(spec: Mapping[str, Any]) -> str:
    """sha256 hex digest of :func:`canonical_json` of ``spec``: the store's folder name."""
    return hashlib.sha256(canonical_json(spec).encode("ascii")).hexdigest()


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


# ----------------------------------------------------------------------------------- dtypes
def _check_dtype(dtype: str) -> None:
    if dtype not in STORAGE_DTYPES:
        raise ValueError(f"unknown activation dtype {dtype!r}; choose one of {', '.join(STORAGE_DTYPES)}")


def _tensor_to_storage(acts: torch.Tensor, dtype: str) -> np.ndarray:
    """``(rows, d)`` tensor -> C-contiguous numpy array holding the on-disk bytes of ``dtype``."""
    cast = acts.detach().to("cpu", getattr(torch, dtype)).contiguous()
    if dtype == "bfloat16":
        return cast.view(torch.int16).numpy().view(STORAGE_DTYPES[dtype])
    return cast.numpy().astype(STORAGE_DTYPES[dtype], copy=False)


def to_float32_tensor(rows: np.ndarray, dtype: str) -> torch.Tensor:
    """Stored rows (numpy, the on-disk dtype of ``dtype``) -> a new float32 torch tensor of the same shape."""
    if dtype == "bfloat16":
        bits = torch.from_numpy(np.ascontiguousarray(rows).view(np.int16))
        return bits.view(torch.bfloat16).float()
    return torch.from_numpy(np.ascontiguousarray(rows)).float()


# ----------------------------------------------------------------------------------- layout
@dataclass(frozen=True)
class ShardLayout:
    """How a source's image positions are cut into shards (and into forward batches inside a shard).

    Shard ``k`` holds the rows of the images at source positions ``[k*m, (k+1)*m)`` with
    ``m = images_per_shard`` (clipped to ``n_images``), each image's ``tokens_per_image`` rows together, in
    position order.
    Forward batches start at the shard's first position, so every run computes the same batches.
    """

    n_images: int
    images_per_shard: int
    batch_size: int

    def __post_init__(self) -> None:
        if self.n_images < 0 or self.images_per_shard < 1 or self.batch_size < 1:
            raise ValueError(
                f"invalid shard layout {self}: need n_images >= 0, images_per_shard >= 1, batch_size >= 1"
            )

    @property
    def n_shards(self) -> int:
        return -(-self.n_images // self.images_per_shard)

    def shard_positions(self, shard: int) -> range:
        """Source positions of the images in ``shard``."""
        start = shard * self.images_per_shard
        return range(start, min(start + self.images_per_shard, self.n_images))

    def batches(self, shard: int) -> list[range]:
        """The forward batches (ranges of source positions) that make up ``shard``."""
        positions = self.shard_positions(shard)
        return [positions[i : i + self.batch_size] for i in range(0, len(positions), self.batch_size)]

    def rank_shards(self, rank: int, world_size: int) -> range:
        """The contiguous block of shards that ``rank`` of ``world_size`` processes write."""
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world size {world_size}")
        return range(rank * self.n_shards // world_size, (rank + 1) * self.n_shards // world_size)

    def to_dict(self) -> dict[str, int]:
        return {**dataclasses.asdict(self), "n_shards": self.n_shards}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ShardLayout:
        return cls(int(data["n_images"]), int(data["images_per_shard"]), int(data["batch_size"]))


def _acts_name(shard: int) -> str:
    return f"acts-{shard:06d}.bin"


def _index_name(shard: int) -> str:
    return f"index-{shard:06d}.bin"


def _record_name(shard: int) -> str:
    return f"shard-{shard:06d}.json"


@dataclass(frozen=True)
class ShardRecord:
    """The commit record of one shard (``shards/shard-NNNNNN.json``; also listed in ``metadata.json``).

    ``skipped`` lists the unreadable images of the shard's positions as ``{"position", "error"}`` dicts.
    """

    shard: int
    rows: int
    acts_file: str
    acts_bytes: int
    acts_sha256: str
    index_file: str
    index_bytes: int
    index_sha256: str
    skipped: tuple[dict[str, Any], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["skipped"] = [dict(s) for s in self.skipped]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ShardRecord:
        fields = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in fields}
        values["skipped"] = tuple(dict(s) for s in data.get("skipped", ()))
        return cls(**values)


# ------------------------------------------------------------------------------ atomic writes
def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_write(path: Path, payload: bytes | memoryview) -> None:
    """Write ``payload`` to a temporary sibling, fsync it, then rename it over ``path``."""
    tmp = path.with_name(f"{path.name}.tmp.{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(payload)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n").encode("utf-8")


def _utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{path} does not exist; is this a store folder written by `saebench cache`?"
        ) from None
    except json.JSONDecodeError as err:
        raise StoreError(
            f"{path} is not valid JSON ({err}); delete the store folder and re-run `saebench cache`"
        ) from None


# ------------------------------------------------------------------------------------ writer
class StoreWriter:
    """Creates or resumes the store folder of ``spec`` under ``root`` and commits shards into it.

    ``spec`` is everything that determines the content (it is hashed into the folder name); ``d`` the row
    width; ``dtype`` one of :data:`STORAGE_DTYPES`; ``tokens_per_image`` and ``token_grid`` describe the
    rows of one image; ``layout`` how images are cut into shards. Re-opening an existing folder with a
    different layout or shape is an error (the rows would not come out byte-identical).
    """

    def __init__(
        self,
        root: str | Path,
        spec: Mapping[str, Any],
        *,
        d: int,
        dtype: str,
        tokens_per_image: int,
        token_grid: tuple[int, int] | None,
        layout: ShardLayout,
    ):
        _check_dtype(dtype)
        self.spec = json.loads(canonical_json(spec))
        self.content_hash = content_hash(self.spec)
        self.path = Path(root) / self.content_hash
        self.shard_dir = self.path / SHARD_DIR
        self.d = int(d)
        self.dtype = dtype
        self.tokens_per_image = int(tokens_per_image)
        self.token_grid = list(token_grid) if token_grid is not None else None
        self.layout = layout

    @staticmethod
    def read_metadata(path: str | Path) -> dict[str, Any]:
        """The ``metadata.json`` of the store folder ``path``."""
        return _read_json(Path(path) / METADATA_FILE)

    # The parts of metadata.json that a resumed run must agree with.
    def _shape_fields(self) -> dict[str, Any]:
        return {
            "d": self.d,
            "dtype": self.dtype,
            "storage_dtype": STORAGE_DTYPES[self.dtype],
            "tokens_per_image": self.tokens_per_image,
            "token_grid": self.token_grid,
            "index_columns": list(INDEX_COLUMNS),
            "index_dtype": INDEX_DTYPE,
            "layout": self.layout.to_dict(),
        }

    def prepare(self) -> None:
        """Create the folder and its in-progress ``metadata.json``, or check an existing one agrees.
        Removes temporary files an interrupted writer left behind. Call once (rank 0) before writing."""
        meta_path = self.path / METADATA_FILE
        if meta_path.exists():
            self._check_existing(_read_json(meta_path))
        else:
            self.shard_dir.mkdir(parents=True, exist_ok=True)
            meta = {
                "format": FORMAT_NAME,
                "format_version": FORMAT_VERSION,
                "content_hash": self.content_hash,
                "spec": self.spec,
                **self._shape_fields(),
                "status": "in_progress",
                "timing": {"created_utc": _utc_now()},
            }
            _atomic_write(meta_path, _json_bytes(meta))
            _fsync_dir(self.path)
        self.shard_dir.mkdir(exist_ok=True)
        for stale in self.shard_dir.glob("*.tmp.*"):
            stale.unlink()

    def _check_existing(self, meta: Mapping[str, Any]) -> None:
        if meta.get("format_version") != FORMAT_VERSION or meta.get("format") != FORMAT_NAME:
            raise StoreMismatchError(
                f"{self.path} holds format {meta.get('format')!r} version {meta.get('format_version')!r}, "
                f"this saebench writes version {FORMAT_VERSION}; delete the folder to re-cache"
            )
        if canonical_json(meta.get("spec")) != canonical_json(self.spec):
            raise StoreMismatchError(
                f"{self.path}/metadata.json records a different spec than its folder hash; "
                "the folder was edited by hand: delete it and re-run `saebench cache`"
            )
        expected = self._shape_fields()
        differing = {k: (meta.get(k), v) for k, v in expected.items() if meta.get(k) != v}
        if differing:
            detail = "; ".join(
                f"{k}: store has {old!r}, this run {new!r}" for k, (old, new) in differing.items()
            )
            raise StoreMismatchError(
                f"cannot resume {self.path}: {detail}. Re-run with the store's values (batch size and shard "
                "rows fix the byte layout) or delete the folder to start over"
            )

    def metadata(self) -> dict[str, Any]:
        return self.read_metadata(self.path)

    def committed(self) -> dict[int, ShardRecord]:
        """Shards with a commit record whose two files exist with the recorded sizes (cheap: no hashing)."""
        done: dict[int, ShardRecord] = {}
        for record_path in sorted(self.shard_dir.glob("shard-*.json")):
            try:
                record = ShardRecord.from_dict(json.loads(record_path.read_text(encoding="utf-8")))
            except (json.JSONDecodeError, TypeError, KeyError):
                continue
            files_ok = all(
                (self.shard_dir / name).is_file() and (self.shard_dir / name).stat().st_size == size
                for name, size in (
                    (record.acts_file, record.acts_bytes),
                    (record.index_file, record.index_bytes),
                )
            )
            if files_ok and 0 <= record.shard < self.layout.n_shards:
                done[record.shard] = record
        return done

    def write_shard(
        self,
        shard: int,
        acts: torch.Tensor,
        index: np.ndarray,
        skipped: list[dict[str, Any]] | tuple[dict[str, Any], ...] = (),
    ) -> ShardRecord:
        """Commit shard ``shard``: ``acts`` ``(rows, d)``, ``index`` ``(rows, 3)`` int64 rows of
        :data:`INDEX_COLUMNS`, and the unreadable images ``skipped`` among its positions."""
        if acts.ndim != 2 or acts.shape[1] != self.d:
            raise ValueError(f"shard {shard}: activations must be (rows, {self.d}), got {tuple(acts.shape)}")
        if index.shape != (acts.shape[0], len(INDEX_COLUMNS)):
            raise ValueError(
                f"shard {shard}: index must be ({acts.shape[0]}, {len(INDEX_COLUMNS)}), got {index.shape}"
            )
        if not torch.isfinite(acts).all():
            raise ValueError(f"shard {shard}: activations contain NaN/Inf; check the backbone and its inputs")
        stored = _tensor_to_storage(acts, self.dtype)
        if not torch.isfinite(to_float32_tensor(stored, self.dtype)).all():
            raise ValueError(
                f"shard {shard}: activations reach {acts.abs().max().item():.4g}, beyond the range of "
                f"{self.dtype}; cache with --dtype bfloat16 or float32"
            )
        acts_bytes = stored.tobytes()
        index_bytes = np.ascontiguousarray(index, dtype=INDEX_DTYPE).tobytes()
        record = ShardRecord(
            shard=shard,
            rows=int(acts.shape[0]),
            acts_file=_acts_name(shard),
            acts_bytes=len(acts_bytes),
            acts_sha256=hashlib.sha256(acts_bytes).hexdigest(),
            index_file=_index_name(shard),
            index_bytes=len(index_bytes),
            index_sha256=hashlib.sha256(index_bytes).hexdigest(),
            skipped=tuple(dict(s) for s in skipped),
        )
        _atomic_write(self.shard_dir / record.acts_file, acts_bytes)
        _atomic_write(self.shard_dir / record.index_file, index_bytes)
        _fsync_dir(self.shard_dir)
        _atomic_write(self.shard_dir / _record_name(shard), _json_bytes(record.to_dict()))
        _fsync_dir(self.shard_dir)
        return record

    def finalize(self, verify: str = "lazy") -> Store:
        """Merge every shard's commit record into ``metadata.json`` (status ``complete``) and open the store.
        Raises :class:`IncompleteStoreError` naming the missing shards if any is not committed."""
        done = self.committed()
        missing = [k for k in range(self.layout.n_shards) if k not in done]
        if missing:
            raise IncompleteStoreError(
                f"{self.path}: {len(missing)} of {self.layout.n_shards} shards are not written "
                f"(first missing: {missing[:10]}); re-run `saebench cache` with the same arguments to finish"
            )
        meta = self.metadata()
        records = [done[k] for k in range(self.layout.n_shards)]
        skipped = [s for r in records for s in r.skipped]
        n_rows = sum(r.rows for r in records)
        meta.update(
            status="complete",
            shards=[r.to_dict() for r in records],
            skipped=skipped,
            counts={
                "source_images": self.layout.n_images,
                "images": self.layout.n_images - len(skipped),
                "skipped_images": len(skipped),
                "rows": n_rows,
            },
        )
        meta["timing"] = {**meta.get("timing", {}), "completed_utc": _utc_now()}
        _atomic_write(self.path / METADATA_FILE, _json_bytes(meta))
        _fsync_dir(self.path)
        return Store(self.path, verify=verify)


# ------------------------------------------------------------------------------------ reader
class Store:
    """A complete store folder, read through memmaps.

    Rows are numbered ``0 .. n_rows-1`` across shards in order. ``verify`` is one of :data:`VERIFY_MODES`;
    sizes are always checked at open, so a truncated or missing shard fails immediately.
    """

    def __init__(self, path: str | Path, verify: str = "lazy"):
        if verify not in VERIFY_MODES:
            raise ValueError(f"unknown verify mode {verify!r}; choose one of {', '.join(VERIFY_MODES)}")
        self.path = Path(path)
        self.metadata = _read_json(self.path / METADATA_FILE)
        meta = self.metadata
        if meta.get("format") != FORMAT_NAME or meta.get("format_version") != FORMAT_VERSION:
            raise StoreError(
                f"{self.path} is format {meta.get('format')!r} version {meta.get('format_version')!r}; "
                f"this saebench reads {FORMAT_NAME!r} version {FORMAT_VERSION}. Re-cache it with this version"
            )
        if meta.get("status") != "complete":
            raise IncompleteStoreError(
                f"{self.path} is still being written (status {meta.get('status')!r}); re-run "
                "`saebench cache` with the same arguments to finish it"
            )
        self.records = [ShardRecord.from_dict(r) for r in meta["shards"]]
        self.offsets = np.concatenate([[0], np.cumsum([r.rows for r in self.records])]).astype(np.int64)
        self._verified: set[int] = set()
        self._verify_lazily = verify == "lazy"
        for shard in range(len(self.records)):
            self._check_sizes(shard)
        if verify == "open":
            self.verify()

    @classmethod
    def open(cls, path: str | Path, verify: str = "lazy") -> Store:
        return cls(path, verify=verify)

    # ------------------------------------------------------------------ description
    @property
    def spec(self) -> dict[str, Any]:
        return self.metadata["spec"]

    @property
    def content_hash(self) -> str:
        return self.metadata["content_hash"]

    @property
    def d(self) -> int:
        return int(self.metadata["d"])

    @property
    def dtype(self) -> str:
        return self.metadata["dtype"]

    @property
    def tokens_per_image(self) -> int:
        return int(self.metadata["tokens_per_image"])

    @property
    def token_grid(self) -> tuple[int, int] | None:
        grid = self.metadata["token_grid"]
        return tuple(grid) if grid is not None else None

    @property
    def n_rows(self) -> int:
        return int(self.offsets[-1])

    @property
    def n_images(self) -> int:
        """Images with rows in the store (source images minus skipped ones)."""
        return int(self.metadata["counts"]["images"])

    @property
    def skipped(self) -> list[dict[str, Any]]:
        return list(self.metadata["skipped"])

    @property
    def n_shards(self) -> int:
        return len(self.records)

    def __len__(self) -> int:
        return self.n_rows

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r}, rows={self.n_rows}, d={self.d}, dtype={self.dtype})"

    # ------------------------------------------------------------------ integrity
    def _shard_files(self, shard: int) -> list[tuple[Path, int, str]]:
        r = self.records[shard]
        base = self.path / SHARD_DIR
        return [
            (base / r.acts_file, r.acts_bytes, r.acts_sha256),
            (base / r.index_file, r.index_bytes, r.index_sha256),
        ]

    def _check_sizes(self, shard: int) -> None:
        for path, size, _ in self._shard_files(shard):
            if not path.is_file():
                raise CorruptShardError(
                    f"shard file {path} is missing; re-run `saebench cache` with the same "
                    "arguments to rewrite it"
                )
            actual = path.stat().st_size
            if actual != size:
                raise CorruptShardError(
                    f"shard file {path} is truncated or overwritten: {actual} bytes, the manifest "
                    f"records {size}; {_FIX_HINT}"
                )

    def verify_shard(self, shard: int) -> None:
        """Check both files of ``shard`` against their recorded sha256; raise :class:`CorruptShardError`."""
        self._check_sizes(shard)
        for path, _, expected in self._shard_files(shard):
            actual = _file_sha256(path)
            if actual != expected:
                raise CorruptShardError(
                    f"shard file {path} is corrupted: sha256 {actual[:16]}... differs from the recorded "
                    f"{expected[:16]}...; {_FIX_HINT}"
                )
        self._verified.add(shard)

    def verify(self) -> None:
        """Check every shard's checksums."""
        for shard in range(self.n_shards):
            self.verify_shard(shard)

    def _ensure_verified(self, shard: int) -> None:
        if self._verify_lazily and shard not in self._verified:
            self.verify_shard(shard)

    # ------------------------------------------------------------------ reading
    def shard_acts(self, shard: int) -> np.ndarray:
        """``(rows, d)`` read-only memmap of ``shard``, on-disk dtype (see :func:`to_float32_tensor`)."""
        self._ensure_verified(shard)
        r = self.records[shard]
        if r.rows == 0:
            return np.empty((0, self.d), dtype=STORAGE_DTYPES[self.dtype])
        return np.memmap(
            self.path / SHARD_DIR / r.acts_file,
            dtype=STORAGE_DTYPES[self.dtype],
            mode="r",
            shape=(r.rows, self.d),
        )

    def shard_index(self, shard: int) -> np.ndarray:
        """``(rows, 3)`` int64 array of :data:`INDEX_COLUMNS` for ``shard``."""
        self._ensure_verified(shard)
        r = self.records[shard]
        data = np.fromfile(self.path / SHARD_DIR / r.index_file, dtype=INDEX_DTYPE)
        return data.reshape(r.rows, len(INDEX_COLUMNS)).astype(np.int64, copy=False)

    def _spans(self, start: int, stop: int) -> Iterator[tuple[int, int, int]]:
        """``(shard, local_start, local_stop)`` pieces of the global row range ``[start, stop)``."""
        if not 0 <= start <= stop <= self.n_rows:
            raise IndexError(f"row range [{start}, {stop}) is outside the store's {self.n_rows} rows")
        shard = int(np.searchsorted(self.offsets, start, side="right")) - 1
        while start < stop:
            local_start = start - int(self.offsets[shard])
            local_stop = min(stop, int(self.offsets[shard + 1])) - int(self.offsets[shard])
            if local_stop > local_start:
                yield shard, local_start, local_stop
            start = int(self.offsets[shard]) + local_stop
            shard += 1

    def read_rows(self, start: int, stop: int) -> np.ndarray:
        """Rows ``[start, stop)`` as a new ``(stop-start, d)`` array in the on-disk dtype."""
        pieces = [np.asarray(self.shard_acts(s)[a:b]) for s, a, b in self._spans(start, stop)]
        if not pieces:
            return np.empty((0, self.d), dtype=STORAGE_DTYPES[self.dtype])
        return np.concatenate(pieces) if len(pieces) > 1 else pieces[0].copy()

    def rows(self, start: int, stop: int) -> torch.Tensor:
        """Rows ``[start, stop)`` as a float32 tensor ``(stop-start, d)``."""
        return to_float32_tensor(self.read_rows(start, stop), self.dtype)

    def take(self, rows: np.ndarray) -> np.ndarray:
        """The rows at global indices ``rows`` (any order) as a ``(len(rows), d)`` on-disk-dtype array."""
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size and (rows.min() < 0 or rows.max() >= self.n_rows):
            raise IndexError(f"row indices must lie in [0, {self.n_rows})")
        out = np.empty((rows.size, self.d), dtype=STORAGE_DTYPES[self.dtype])
        shard_of = np.searchsorted(self.offsets, rows, side="right") - 1
        for shard in np.unique(shard_of):
            sel = np.nonzero(shard_of == shard)[0]
            out[sel] = self.shard_acts(int(shard))[rows[sel] - self.offsets[shard]]
        return out

    def index(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """``(rows, 3)`` int64 :data:`INDEX_COLUMNS` of rows ``[start, stop)``."""
        stop = self.n_rows if stop is None else stop
        pieces = [self.shard_index(s)[a:b] for s, a, b in self._spans(start, stop)]
        return np.concatenate(pieces) if pieces else np.empty((0, len(INDEX_COLUMNS)), dtype=np.int64)

    def image_order(self) -> np.ndarray:
        """``(n_images,)`` dataset image index of each cached image, in row order."""
        return self.index()[:: self.tokens_per_image, 0]


# ----------------------------------------------------------------------------- aligned stores
class AlignedStores(Mapping[str, Store]):
    """Stores of several models over the same images in the same order, row ``i`` meaning the same
    (image, token) in each: the input of a universal SAE (USAE, usae.md §1).

    ``stores`` maps a model name to a :class:`Store` or a store folder. Refuses, naming the two stores
    and the difference, groups whose image count, image order, dataset or token grid differ.
    """

    def __init__(self, stores: Mapping[str, Store | str | Path], verify: str = "lazy"):
        if not stores:
            raise ValueError("AlignedStores needs at least one store")
        self._stores = {
            name: s if isinstance(s, Store) else Store(s, verify=verify) for name, s in stores.items()
        }
        self._check_alignment()

    def _check_alignment(self) -> None:
        (ref_name, ref), *others = self._stores.items()
        ref_order = ref.image_order()
        for name, store in others:
            pair = f"stores {ref_name!r} ({ref.path}) and {name!r} ({store.path})"
            if store.n_images != ref.n_images:
                raise StoreMismatchError(
                    f"{pair} differ in image count: {ref.n_images} images ({len(ref.skipped)} skipped) vs "
                    f"{store.n_images} ({len(store.skipped)} skipped). Cache every model from the same "
                    "source and subset so that the same images are kept"
                )
            order = store.image_order()
            if not np.array_equal(order, ref_order):
                first = int(np.nonzero(order != ref_order)[0][0])
                raise StoreMismatchError(
                    f"{pair} differ in image order: cached image {first} is dataset image "
                    f"{int(ref_order[first])} in {ref_name!r} but {int(order[first])} in {name!r}. Cache "
                    "every model from the same source, subset and ordering"
                )
            if canonical_json(store.spec.get("dataset")) != canonical_json(ref.spec.get("dataset")):
                raise StoreMismatchError(
                    f"{pair} were cached from different datasets ({ref.spec.get('dataset')} vs "
                    f"{store.spec.get('dataset')}); cache every model from the same source"
                )
            if store.tokens_per_image != ref.tokens_per_image or store.token_grid != ref.token_grid:
                raise StoreMismatchError(
                    f"{pair} differ in tokens per image: {ref.tokens_per_image} (grid {ref.token_grid}) vs "
                    f"{store.tokens_per_image} (grid {store.token_grid}). Re-cache with a grid resize "
                    "(`--grid H W`) so every model has the same token grid"
                )

    def __getitem__(self, name: str) -> Store:
        return self._stores[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._stores)

    def __len__(self) -> int:
        return len(self._stores)

    @property
    def n_rows(self) -> int:
        return next(iter(self._stores.values())).n_rows

    def read_rows(self, start: int, stop: int) -> dict[str, np.ndarray]:
        """Rows ``[start, stop)`` of every model, in each store's on-disk dtype."""
        return {name: store.read_rows(start, stop) for name, store in self._stores.items()}
