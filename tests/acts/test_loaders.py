"""Loaders over stores: shuffled (every row once per epoch, deterministic, resumable), ordered, by image, and
aligned multi-model batches. Stores come from ``cache_worker.synthetic_store``: column 0 is the row number."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from saebench.acts.loaders import ByImageLoader, OrderedLoader, ShuffledLoader, shuffle_windows
from saebench.acts.store import AlignedStores

_spec = importlib.util.spec_from_file_location("cache_worker", Path(__file__).with_name("cache_worker.py"))
worker = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(worker)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    # 47 images x 5 tokens = 235 rows in shards of 7 images: nothing divides evenly
    return worker.synthetic_store(tmp_path_factory.mktemp("store"), n_images=47, tokens_per_image=5)


def _row_ids(batches) -> list[int]:
    return [int(v) for b in batches for v in b[:, 0].tolist()]


@pytest.mark.parametrize(
    ("batch_size", "buffer_rows", "chunk_rows"), [(16, 64, 16), (7, 30, 9), (300, 1000, 64)]
)
def test_shuffled_epoch_yields_every_row_exactly_once(store, batch_size, buffer_rows, chunk_rows):
    loader = ShuffledLoader(store, batch_size, seed=5, buffer_rows=buffer_rows, chunk_rows=chunk_rows)
    batches = list(loader)
    assert len(batches) == len(loader) == -(-235 // batch_size)
    assert all(b.dtype == torch.float32 and b.shape[1] == 6 for b in batches)
    assert all(len(b) == batch_size for b in batches[:-1])
    ids = _row_ids(batches)
    assert sorted(ids) == list(range(235))
    if batch_size < 235:
        assert ids != sorted(ids)  # actually shuffled


def test_shuffle_mixes_rows_from_many_chunks(store):
    ids = np.array(_row_ids(ShuffledLoader(store, 32, seed=0, buffer_rows=120, chunk_rows=10)))
    # each window holds 12 chunks of 10 rows; the first batch of 32 rows must come from more than 3 chunks
    assert len(np.unique(ids[:32] // 10)) > 3


def test_shuffled_is_deterministic_by_seed_and_epoch(store):
    first = _row_ids(ShuffledLoader(store, 16, seed=1, buffer_rows=64, chunk_rows=8))
    again = _row_ids(ShuffledLoader(store, 16, seed=1, buffer_rows=64, chunk_rows=8))
    other_seed = _row_ids(ShuffledLoader(store, 16, seed=2, buffer_rows=64, chunk_rows=8))
    loader = ShuffledLoader(store, 16, seed=1, buffer_rows=64, chunk_rows=8)
    epoch0, epoch1 = _row_ids(loader), _row_ids(loader)
    assert first == again == epoch0
    assert first != other_seed and epoch0 != epoch1
    assert sorted(epoch1) == list(range(235))
    assert loader.state_dict() == {"seed": 1, "epoch": 2, "rows_consumed": 0}


@pytest.mark.parametrize("stop_after", [1, 4, 9])
def test_shuffled_resumes_mid_epoch(store, stop_after):
    # windows of 32 rows and batches of 12: resumed batches start inside windows and span two of them
    reference = ShuffledLoader(store, 12, seed=7, buffer_rows=32, chunk_rows=8)
    expected = list(reference.epochs(2))
    interrupted = ShuffledLoader(store, 12, seed=7, buffer_rows=32, chunk_rows=8)
    seen = []
    for batch in interrupted:
        seen.append(batch)
        if len(seen) == stop_after:
            break
    state = interrupted.state_dict()
    assert state == {"seed": 7, "epoch": 0, "rows_consumed": 12 * stop_after}
    resumed = ShuffledLoader(store, 12, seed=7, buffer_rows=32, chunk_rows=8)
    resumed.load_state_dict(state)
    seen.extend(resumed.epochs(2))
    assert len(seen) == len(expected)
    assert all(torch.equal(a, b) for a, b in zip(seen, expected, strict=True))


def test_resume_state_is_checked(store):
    loader = ShuffledLoader(store, 12, seed=7)
    with pytest.raises(ValueError, match="seed 3"):
        loader.load_state_dict({"seed": 3, "epoch": 0, "rows_consumed": 0})
    with pytest.raises(ValueError, match="not a batch boundary"):
        loader.load_state_dict({"seed": 7, "epoch": 0, "rows_consumed": 5})


def test_drop_last_drops_only_the_final_partial_batch(store):
    loader = ShuffledLoader(store, 50, seed=0, drop_last=True, buffer_rows=64, chunk_rows=8)
    batches = list(loader)
    assert len(batches) == len(loader) == 4 and all(len(b) == 50 for b in batches)
    assert len(set(_row_ids(batches))) == 200


def test_windows_cover_every_chunk_once():
    windows = shuffle_windows(n_rows=100, chunk_rows=8, buffer_rows=30, seed=0, epoch=0)
    chunks = sorted(c for w in windows for c in w)
    assert chunks == [(a, min(a + 8, 100)) for a in range(0, 100, 8)]
    assert all(len(w) == 3 for w in windows[:-1])  # floor(30 / 8) chunks per window


def test_ordered_loader_reads_in_store_order(store):
    batches = list(OrderedLoader(store, 40, start_row=3, stop_row=200))
    assert [len(b) for b in batches] == [40, 40, 40, 40, 37]
    assert torch.equal(torch.cat(batches), store.rows(3, 200))


def test_by_image_loader_groups_each_images_tokens(store):
    batches = list(ByImageLoader(store, 10))
    assert [b.acts.shape for b in batches] == [(10, 5, 6)] * 4 + [(7, 5, 6)]
    acts = torch.cat([b.acts for b in batches])
    assert torch.equal(acts.reshape(-1, 6), store.rows(0, 235))
    assert torch.equal(torch.cat([b.image_index for b in batches]), torch.arange(47))
    assert torch.equal(torch.cat([b.label for b in batches]), torch.arange(47) % 4)


def test_aligned_batches_keep_rows_aligned_across_models(tmp_path):
    # two models of different widths, dtypes and shard sizes over the same images
    a = worker.synthetic_store(tmp_path / "a", n_images=30, d=6, seed=1, images_per_shard=4)
    b = worker.synthetic_store(tmp_path / "b", n_images=30, d=3, seed=2, images_per_shard=9, dtype="float16")
    group = AlignedStores({"vit": a, "dino": b})
    batches = list(ShuffledLoader(group, 16, seed=3, buffer_rows=40, chunk_rows=8))
    assert all(set(batch) == {"vit", "dino"} for batch in batches)
    assert all(batch["vit"].shape[1] == 6 and batch["dino"].shape[1] == 3 for batch in batches)
    for batch in batches:  # row numbers < 2048 are exact in float16
        assert torch.equal(batch["vit"][:, 0], batch["dino"][:, 0])
    assert sorted(int(v) for batch in batches for v in batch["vit"][:, 0]) == list(range(150))
    ordered = list(OrderedLoader(group, 64))
    assert torch.equal(torch.cat([o["dino"] for o in ordered])[:, 0], torch.arange(150).float())
