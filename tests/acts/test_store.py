"""The store format (docs/cache-format.md): hashing, dtypes, commit protocol, integrity, aligned stores,
and the standardisation statistics saved beside a store."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from saebench.acts.normalization import (
    compute_statistics,
    load_statistics,
    normalization,
    statistics_path,
    store_statistics,
)
from saebench.acts.store import (
    AlignedStores,
    CorruptShardError,
    IncompleteStoreError,
    ShardLayout,
    Store,
    StoreError,
    StoreMismatchError,
    StoreWriter,
    canonical_json,
    content_hash,
)

_spec = importlib.util.spec_from_file_location("cache_worker", Path(__file__).with_name("cache_worker.py"))
worker = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(worker)


def _writer(
    root: Path, *, dtype: str = "float32", d: int = 3, layout: ShardLayout | None = None
) -> StoreWriter:
    layout = layout or ShardLayout(n_images=4, images_per_shard=2, batch_size=2)
    return StoreWriter(
        root, {"test": "spec"}, d=d, dtype=dtype, tokens_per_image=1, token_grid=None, layout=layout
    )


def _index(rows: int, first_image: int = 0) -> np.ndarray:
    images = np.arange(first_image, first_image + rows)
    return np.stack([images, np.zeros(rows, dtype=np.int64), images % 2], axis=1)


# ------------------------------------------------------------------------------------------ hashing
def test_content_hash_is_canonical_and_sensitive_to_every_field():
    spec = {"backbone": {"name": "vit", "weights": "abc"}, "hook": "block.3", "dtype": "float16"}
    reordered = {"dtype": "float16", "hook": "block.3", "backbone": {"weights": "abc", "name": "vit"}}
    assert canonical_json(spec) == canonical_json(reordered)
    assert content_hash(spec) == content_hash(reordered)
    # sha256 of the canonical text, as the spec says (hashlib computed independently here)
    import hashlib

    text = '{"backbone":{"name":"vit","weights":"abc"},"dtype":"float16","hook":"block.3"}'
    assert content_hash(spec) == hashlib.sha256(text.encode()).hexdigest()
    for key, value in [
        ("hook", "block.4"),
        ("dtype", "float32"),
        ("backbone", {"name": "vit", "weights": "abd"}),
    ]:
        assert content_hash({**spec, key: value}) != content_hash(spec)


# ------------------------------------------------------------------------------------ dtypes, layout
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_rows_round_trip_through_each_dtype(tmp_path, dtype):
    acts = torch.randn(4, 3) * 10
    writer = _writer(tmp_path, dtype=dtype)
    writer.prepare()
    writer.write_shard(0, acts[:2], _index(2))
    writer.write_shard(1, acts[2:], _index(2, 2))
    store = writer.finalize(verify="open")
    # exactly torch's own rounding to the storage dtype, then back to float32
    expected = acts.to(getattr(torch, dtype)).float()
    assert torch.equal(store.rows(0, 4), expected)
    bytes_per_value = {"float32": 4, "float16": 2, "bfloat16": 2}[dtype]
    assert (store.path / "shards" / "acts-000000.bin").stat().st_size == 2 * 3 * bytes_per_value
    if dtype == "bfloat16":  # stored as the raw upper 16 bits of the float32 pattern
        bits = np.fromfile(store.path / "shards" / "acts-000000.bin", dtype="<u2")
        assert np.array_equal(bits, (expected[:2].numpy().view("<u4") >> 16).astype("<u2").reshape(-1))


def test_float16_overflow_is_refused(tmp_path):
    writer = _writer(tmp_path, dtype="float16")
    writer.prepare()
    with pytest.raises(ValueError, match="beyond the range of float16.*bfloat16"):
        writer.write_shard(0, torch.tensor([[1e6, 0.0, 0.0], [0.0, 0.0, 0.0]]), _index(2))


def test_layout_cuts_positions_into_shards_batches_and_rank_blocks():
    layout = ShardLayout(n_images=10, images_per_shard=4, batch_size=3)
    assert layout.n_shards == 3
    assert [list(layout.shard_positions(k)) for k in range(3)] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert [list(b) for b in layout.batches(1)] == [[4, 5, 6], [7]]
    # 3 shards over 2 ranks: floor(r*3/2) .. floor((r+1)*3/2) -> [0], [1, 2]
    assert [list(layout.rank_shards(r, 2)) for r in range(2)] == [[0], [1, 2]]


def test_reading_across_shards(tmp_path):
    store = worker.synthetic_store(tmp_path, n_images=10, tokens_per_image=3, images_per_shard=4)
    assert store.n_rows == 30 and store.n_shards == 3
    assert torch.equal(store.rows(10, 27)[:, 0], torch.arange(10, 27).float())
    picks = np.array([29, 0, 13, 12])
    assert np.array_equal(store.take(picks)[:, 0], picks.astype(np.float32))
    index = store.index()
    assert np.array_equal(index[:, 0], np.repeat(np.arange(10), 3))
    assert np.array_equal(index[:, 1], np.tile(np.arange(3), 10))
    assert np.array_equal(store.image_order(), np.arange(10))


# ------------------------------------------------------------------------------------ commit protocol
def test_uncommitted_shard_is_invisible_and_stale_temporaries_are_removed(tmp_path):
    writer = _writer(tmp_path)
    writer.prepare()
    writer.write_shard(0, torch.ones(2, 3), _index(2))
    # an interrupted writer: data renamed into place but no commit record, plus a temporary file
    (writer.shard_dir / "acts-000001.bin").write_bytes(b"\0" * 24)
    (writer.shard_dir / "index-000001.bin.tmp.999").write_bytes(b"partial")
    assert set(writer.committed()) == {0}
    with pytest.raises(IncompleteStoreError, match=r"1 of 2 shards.*\[1\]"):
        writer.finalize()
    with pytest.raises(IncompleteStoreError, match="re-run `saebench cache`"):
        Store(writer.path)
    resumed = _writer(tmp_path)
    resumed.prepare()
    assert not list(writer.shard_dir.glob("*.tmp.*"))
    resumed.write_shard(1, 2 * torch.ones(2, 3), _index(2, 2))
    store = resumed.finalize()
    assert torch.equal(store.rows(0, 4)[:, 0], torch.tensor([1.0, 1.0, 2.0, 2.0]))
    assert store.metadata["counts"] == {"source_images": 4, "images": 4, "skipped_images": 0, "rows": 4}


def test_a_commit_record_whose_file_is_truncated_does_not_count(tmp_path):
    writer = _writer(tmp_path)
    writer.prepare()
    writer.write_shard(0, torch.ones(2, 3), _index(2))
    path = writer.shard_dir / "acts-000000.bin"
    path.write_bytes(path.read_bytes()[:-4])
    assert writer.committed() == {}


def test_resuming_with_a_different_layout_is_refused(tmp_path):
    _writer(tmp_path).prepare()
    other = _writer(tmp_path, layout=ShardLayout(n_images=4, images_per_shard=1, batch_size=2))
    with pytest.raises(
        StoreMismatchError, match="layout: store has .*images_per_shard.*Re-run with the store's"
    ):
        other.prepare()


# ------------------------------------------------------------------------------------ integrity
def test_flipped_byte_and_truncated_shard_are_named(tmp_path):
    store = worker.synthetic_store(tmp_path, n_images=12, images_per_shard=4)
    corrupted = store.path / "shards" / "acts-000001.bin"
    data = bytearray(corrupted.read_bytes())
    data[17] ^= 0x01
    corrupted.write_bytes(bytes(data))
    truncated = store.path / "shards" / "index-000002.bin"
    original_index = truncated.read_bytes()
    truncated.write_bytes(original_index[:-8])

    with pytest.raises(CorruptShardError, match=r"index-000002\.bin is truncated.*delete it and re-run"):
        Store(store.path)
    truncated.write_bytes(original_index)
    with pytest.raises(CorruptShardError, match=r"acts-000001\.bin is corrupted.*delete it and re-run"):
        Store(store.path, verify="open")
    lazy = Store(store.path, verify="lazy")
    assert lazy.rows(0, 20).shape == (20, 6)  # shard 0 is intact
    with pytest.raises(CorruptShardError, match=r"acts-000001\.bin"):
        lazy.rows(20, 21)
    unverified = Store(store.path, verify="none")
    assert unverified.rows(20, 40).shape == (20, 6)
    corrupted.unlink()
    with pytest.raises(CorruptShardError, match=r"acts-000001\.bin is missing"):
        Store(store.path)


def test_unknown_format_version_is_refused(tmp_path):
    store = worker.synthetic_store(tmp_path)
    meta_path = store.path / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta["format_version"] = 99
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(StoreError, match="version 99"):
        Store(store.path)


# ------------------------------------------------------------------------------------ aligned stores
def test_aligned_stores_accept_same_images_and_read_the_same_rows(tmp_path):
    a = worker.synthetic_store(tmp_path / "a", d=6, seed=1)
    b = worker.synthetic_store(tmp_path / "b", d=4, dtype="float16", seed=2, images_per_shard=3)
    group = AlignedStores({"a": a, "b": b.path})
    rows = group.read_rows(33, 71)
    assert rows["a"].shape == (38, 6) and rows["b"].shape == (38, 4)
    assert np.array_equal(rows["a"][:, 0], rows["b"][:, 0].astype(np.float32))


def test_aligned_stores_refuse_different_count_order_dataset_or_token_grid(tmp_path):
    ref = worker.synthetic_store(tmp_path / "ref")
    fewer = worker.synthetic_store(tmp_path / "fewer", n_images=39)
    shuffled = worker.synthetic_store(tmp_path / "order", image_order=[1, 0, *range(2, 40)])
    other_data = worker.synthetic_store(tmp_path / "data", dataset="other")
    more_tokens = worker.synthetic_store(tmp_path / "tokens", tokens_per_image=7)
    with pytest.raises(StoreMismatchError, match=r"'ref'.*'fewer'.*image count: 40 images .* vs 39"):
        AlignedStores({"ref": ref, "fewer": fewer})
    with pytest.raises(
        StoreMismatchError, match=r"image order: cached image 0 is dataset image 0 in 'ref' but 1"
    ):
        AlignedStores({"ref": ref, "shuffled": shuffled})
    with pytest.raises(StoreMismatchError, match="different datasets"):
        AlignedStores({"ref": ref, "other": other_data})
    with pytest.raises(
        StoreMismatchError, match=r"tokens per image: 5 \(grid None\) vs 7 \(grid None\).*grid resize"
    ):
        AlignedStores({"ref": ref, "more": more_tokens})
    square = worker.synthetic_store(tmp_path / "square", tokens_per_image=4, token_grid=(2, 2))
    strip = worker.synthetic_store(tmp_path / "strip", tokens_per_image=4, token_grid=(1, 4))
    with pytest.raises(StoreMismatchError, match=r"4 \(grid \(2, 2\)\) vs 4 \(grid \(1, 4\)\)"):
        AlignedStores({"square": square, "strip": strip})


# ------------------------------------------------------------------------------------ statistics
def test_statistics_match_direct_computation(tmp_path):
    store = worker.synthetic_store(tmp_path, n_images=30, tokens_per_image=4, d=5)
    x = store.rows(0, store.n_rows).double()
    stats = compute_statistics(store, chunk_rows=17)  # chunks that do not divide the rows exercise the merge
    # float64 accumulation both ways; 1e-9 relative covers summation-order differences
    assert np.allclose(stats.mean, x.mean(0).numpy(), rtol=1e-9, atol=0)
    assert np.allclose(stats.std, x.std(0).numpy(), rtol=1e-9, atol=0)
    assert math.isclose(stats.scalar_mean, x.mean().item(), rel_tol=1e-9)
    assert math.isclose(stats.scalar_std, x.std().item(), rel_tol=1e-9)
    centered_norms = (x - x.mean(0)).norm(dim=1)
    assert math.isclose(stats.mean_sq_centered_norm, (centered_norms**2).mean().item(), rel_tol=1e-9)
    assert math.isclose(stats.mean_centered_norm, centered_norms.mean().item(), rel_tol=1e-9)


def test_normalization_schemes(tmp_path):
    store = worker.synthetic_store(tmp_path, n_images=30, tokens_per_image=4, d=5)
    stats = compute_statistics(store)
    x = store.rows(0, store.n_rows).double()
    d = store.d

    def standardised(kind: str) -> torch.Tensor:
        mean, scale = normalization(stats, kind)
        return (x - mean.double()) / scale.double()

    # USAE: (x - one scalar mean) / (one scalar std + 1e-5): all values then have mean 0, std ~1
    usae = standardised("scalar")
    assert abs(usae.mean().item()) < 1e-6  # float32 mean/scale tensors
    assert math.isclose(usae.std().item(), stats.scalar_std / (stats.scalar_std + 1e-5), rel_tol=1e-6)
    # MSAE paper reading: E||x_n|| = sqrt(d)
    assert math.isclose(
        standardised("target_norm_paper").norm(dim=1).mean().item(), math.sqrt(d), rel_tol=1e-6
    )
    # MSAE code: s = sqrt(d) / E||x - mu||^2, so E||x_n||^2 = s^2 E||x - mu||^2 = d / E||x - mu||^2
    code = standardised("target_norm_code")
    expected = d / stats.mean_sq_centered_norm
    assert math.isclose((code.norm(dim=1) ** 2).mean().item(), expected, rel_tol=1e-5)
    assert torch.allclose(standardised("per_dimension").std(0), torch.ones(d, dtype=torch.float64), rtol=1e-4)
    with pytest.raises(ValueError, match="unknown normalization 'zscore'; choose one of scalar"):
        normalization(stats, "zscore")


def test_statistics_of_an_image_sample_are_saved_beside_the_store(tmp_path):
    store = worker.synthetic_store(tmp_path, n_images=30, tokens_per_image=4, d=5)
    stats = store_statistics(store, image_sample=10, seed=3)
    path = statistics_path(store, 10, 3)
    assert path.parent == store.path and path.is_file()
    chosen = np.sort(np.random.default_rng(3).choice(30, size=10, replace=False))
    rows = (chosen[:, None] * 4 + np.arange(4)).reshape(-1)
    x = torch.from_numpy(store.take(rows)).double()
    assert stats.n_rows == 40
    assert np.allclose(stats.mean, x.mean(0).numpy(), rtol=1e-9, atol=0)  # float64 both ways
    loaded = load_statistics(store, 10, 3)
    assert np.array_equal(loaded.mean, stats.mean) and loaded.scalar_std == stats.scalar_std
    with pytest.raises(FileNotFoundError, match="store_statistics"):
        load_statistics(store)
