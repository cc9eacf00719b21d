"""The cache runner on a tiny random ViT over generated images: content, index columns, cache hits, skipped
images, argument errors, resume after interruption (in process and by SIGKILL) and torchrun distribution."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from saebench.acts.backbones import UnknownHookError
from saebench.acts.cache import cache_activations
from saebench.acts.cli import register
from saebench.acts.store import AlignedStores, CorruptShardError, IncompleteStoreError, Store
from saebench.acts.tokens import select_tokens

WORKER = Path(__file__).with_name("cache_worker.py")
_spec = importlib.util.spec_from_file_location("cache_worker", WORKER)
worker = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(worker)

TOKENS = 16  # the tiny ViT's 4x4 patch grid


def _cache(backbone, source, root, hooks="block.1", **options):
    settings = {"tokens": "patches", "batch_size": 2, "dtype": "float16", "shard_rows": 48, "progress": False}
    return cache_activations(backbone, source, hooks, out_root=root, **{**settings, **options})


def _store_content(path: Path) -> dict[str, bytes]:
    """Every file of a store folder; ``metadata.json`` without its timing fields (the run-dependent part)."""
    content = {}
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        data = file.read_bytes()
        if file.name == "metadata.json":
            meta = json.loads(data)
            meta.pop("timing")
            data = json.dumps(meta, sort_keys=True).encode()
        content[str(file.relative_to(path))] = data
    return content


def _forward_counter(backbone) -> list[int]:
    calls = [0]
    backbone.model.register_forward_pre_hook(lambda module, args: calls.__setitem__(0, calls[0] + 1))
    return calls


# ------------------------------------------------------------------------------------------- content
def test_cached_rows_are_the_backbone_patch_tokens(tmp_path):
    backbone = worker.tiny_backbone()
    source = worker.GeneratedImages(10)
    store = _cache(backbone, source, tmp_path, batch_size=3, dtype="float32")
    transform = backbone.preprocessing.transform()
    images = torch.stack([transform(source[i].image) for i in range(10)])
    point = backbone.hooks["block.1"]
    expected = select_tokens(backbone.extract(images, ["block.1"])["block.1"], point.layout, "patches")
    # one batch of 10 here vs batches of 3 in the cache: float32 matmuls may round differently in the last bit
    torch.testing.assert_close(store.rows(0, store.n_rows), expected.reshape(-1, 16), rtol=1e-5, atol=1e-6)
    index = store.index()
    assert np.array_equal(index[:, 0], np.repeat(np.arange(10), TOKENS))
    assert np.array_equal(
        index[:, 1], np.tile(np.arange(1, 1 + TOKENS), 10)
    )  # positions after the class token
    assert np.array_equal(index[:, 2], np.repeat(np.arange(10) % 3, TOKENS))
    meta = store.metadata
    assert meta["tokens_per_image"] == TOKENS and meta["token_grid"] == [4, 4] and meta["d"] == 16
    assert meta["layout"] == {"n_images": 10, "images_per_shard": 3, "batch_size": 3, "n_shards": 4}
    assert meta["spec"]["hook"] == "block.1" and meta["spec"]["dataset"] == source.fingerprint()
    assert meta["spec"]["backbone"]["weights"] == backbone.fingerprint(["block.1"])["weights"]


def test_rerun_is_a_cache_hit_and_any_spec_change_gives_a_new_folder(tmp_path):
    backbone = worker.tiny_backbone()
    calls = _forward_counter(backbone)
    source = worker.GeneratedImages(6)
    first = _cache(backbone, source, tmp_path)
    assert calls[0] == 4  # 2 shards of 3 images (shard_rows 48 / 16 tokens), each in batches of 2 + 1
    again = _cache(backbone, source, tmp_path)
    assert calls[0] == 4 and again.path == first.path
    changed = {
        _cache(backbone, source, tmp_path, dtype="bfloat16").path,
        _cache(backbone, source, tmp_path, tokens="all").path,
        _cache(backbone, worker.GeneratedImages(6, seed=1), tmp_path).path,
        _cache(worker.tiny_backbone(seed=1), source, tmp_path).path,
        _cache(backbone, source, tmp_path, hooks="block.0").path,
    }
    assert len(changed) == 5 and first.path not in changed


def test_unreadable_images_are_skipped_and_counted(tmp_path):
    store = _cache(worker.tiny_backbone(), worker.GeneratedImages(9, unreadable=[2, 7]), tmp_path)
    assert store.metadata["counts"] == {
        "source_images": 9,
        "images": 7,
        "skipped_images": 2,
        "rows": 7 * TOKENS,
    }
    assert [s["position"] for s in store.skipped] == [2, 7]
    assert all("UnreadableImageError" in s["error"] for s in store.skipped)
    assert np.array_equal(store.image_order(), [0, 1, 3, 4, 5, 6, 8])


def test_all_images_of_a_shard_unreadable_gives_an_empty_shard(tmp_path):
    store = _cache(worker.tiny_backbone(), worker.GeneratedImages(7, unreadable=[3, 4, 5]), tmp_path)
    assert [r.rows for r in store.records] == [3 * TOKENS, 0, TOKENS]
    assert np.array_equal(store.image_order(), [0, 1, 2, 6])


def test_grid_resize_and_several_hooks_in_one_pass(tmp_path):
    backbone = worker.tiny_backbone()
    calls = _forward_counter(backbone)
    stores = _cache(backbone, worker.GeneratedImages(5), tmp_path, hooks=["block.0", "block.-1"], grid=(2, 2))
    assert set(stores) == {"block.0", "block.-1"} and calls[0] == 3
    assert stores["block.-1"].spec["hook"] == "block.1"  # aliases resolve to the canonical hook name
    for store in stores.values():
        assert store.tokens_per_image == 4 and store.token_grid == (2, 2)
        assert np.array_equal(store.index()[:4, 1], [1, 2, 3, 4])
    group = AlignedStores(stores)
    assert group.n_rows == 20


def test_bad_arguments_name_the_valid_choices(tmp_path):
    backbone, source = worker.tiny_backbone(), worker.GeneratedImages(3)
    with pytest.raises(UnknownHookError, match=r"no hook 'block\.7'; valid hooks: block\.0\.\.block\.1"):
        _cache(backbone, source, tmp_path, hooks="block.7")
    with pytest.raises(ValueError, match="unknown token selection 'patch'; choose one of all, cls"):
        _cache(backbone, source, tmp_path, tokens="patch")
    with pytest.raises(
        ValueError, match="unknown activation dtype 'fp8'; choose one of float32, float16, bfloat16"
    ):
        _cache(backbone, source, tmp_path, dtype="fp8")
    with pytest.raises(ValueError, match="grid resize needs tokens='patches'"):
        _cache(backbone, source, tmp_path, tokens="all", grid=(2, 2))


def _cli(*argv: str) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="saebench")
    register(parser.add_subparsers())
    args = parser.parse_args(["cache", *argv])
    return args.func(args)


def test_cli_caches_a_registered_backbone(tmp_path, capsys):
    argv = [
        "--backbone",
        "timm:vit_tiny_patch16_224",
        "--random-init",
        "--hook",
        "block.0",
        "--tokens",
        "cls",
        "--source",
        "skimage",
        "--subset",
        "3",
        "--dtype",
        "bfloat16",
        "--out",
        str(tmp_path),
        "--no-progress",
    ]
    assert _cli(*argv) == 0
    hook, path, _ = capsys.readouterr().out.strip().split("\t")
    store = Store(path, verify="open")
    assert hook == "block.0" and store.n_rows == 3 and store.d == 192 and store.dtype == "bfloat16"
    assert store.spec["dataset"]["kind"] == "subset" and store.spec["dataset"]["first_n"] == 3


def test_cli_errors_name_the_valid_choices(tmp_path, capsys):
    common = ["--random-init", "--source", "skimage", "--out", str(tmp_path)]
    assert _cli("--backbone", "vit-b17", "--hook", "block.0", *common) == 2
    err = capsys.readouterr().err
    assert "unknown backbone 'vit-b17'" in err and "vit-b16" in err and "efficientnet-lite0" in err
    assert (
        _cli(
            "--backbone",
            "timm:vit_tiny_patch16_224",
            "--hook",
            "block.0",
            "--random-init",
            "--source",
            "cifar",
            "--out",
            str(tmp_path),
        )
        == 2
    )
    assert "unknown source 'cifar'; valid sources: fashion-mnist, imagefolder, webdataset, skimage" in (
        capsys.readouterr().err
    )


# ------------------------------------------------------------------------------------------- resume
class _InterruptOnce:
    """A source that raises KeyboardInterrupt the first time ``position`` is read (a crash mid-shard)."""

    def __init__(self, source, position: int):
        self.source, self.position, self.fired = source, position, False
        self.name = source.name

    def __len__(self):
        return len(self.source)

    def __getitem__(self, position):
        if position == self.position and not self.fired:
            self.fired = True
            raise KeyboardInterrupt
        return self.source[position]

    def fingerprint(self):
        return self.source.fingerprint()


def test_interrupted_run_resumes_to_identical_bytes(tmp_path):
    backbone, source = worker.tiny_backbone(), worker.GeneratedImages(14, unreadable=[5])
    reference = _cache(backbone, source, tmp_path / "reference")
    flaky = _InterruptOnce(source, position=10)  # in the middle of shard 3 (images 9, 10, 11)
    with pytest.raises(KeyboardInterrupt):
        _cache(backbone, flaky, tmp_path / "resumed", workers=0)
    partial = tmp_path / "resumed" / reference.path.name
    assert sorted(p.name for p in partial.glob("shards/shard-*.json")) == [
        f"shard-00000{k}.json" for k in range(3)
    ]
    with pytest.raises(IncompleteStoreError, match="still being written"):
        Store(partial)
    resumed = _cache(backbone, flaky, tmp_path / "resumed")
    assert _store_content(resumed.path) == _store_content(reference.path)


def test_deleting_a_corrupt_shard_and_rerunning_restores_it(tmp_path):
    backbone, source = worker.tiny_backbone(), worker.GeneratedImages(9)
    store = _cache(backbone, source, tmp_path)
    before = _store_content(store.path)
    shard = store.path / "shards" / "acts-000001.bin"
    data = bytearray(shard.read_bytes())
    data[0] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(CorruptShardError, match=r"acts-000001\.bin is corrupted"):
        Store(store.path, verify="open")
    shard.unlink()  # what the error message says to do
    restored = _cache(backbone, source, tmp_path)
    restored.verify()
    assert _store_content(restored.path) == before


# ------------------------------------------------------------------------- subprocesses (SIGKILL, torchrun)
WORKER_ARGS = ["--images", "24", "--batch-size", "2", "--shard-rows", "48", "--unreadable", "4"]  # 8 shards


def _worker_command(root: Path, *extra: str, launcher: tuple[str, ...] = ()) -> list[str]:
    return [sys.executable, *launcher, str(WORKER), "--out", str(root), *WORKER_ARGS, *extra]


def _run_here(root: Path) -> Path:
    """The worker's run in this process (one intra-op thread, as in the worker processes)."""
    threads = torch.get_num_threads()
    try:
        return worker.main(["--out", str(root), *WORKER_ARGS]).path
    finally:
        torch.set_num_threads(threads)


def _has_record(acts_file: Path) -> bool:
    return acts_file.with_name(acts_file.name.replace("acts-", "shard-").replace(".bin", ".json")).exists()


def _committed(root: Path) -> int:
    return len(list(root.glob("*/shards/shard-*.json")))


def _kill_after(root: Path, commits: int) -> int:
    """Start a slowed worker (0.1 s per forward), SIGKILL it once ``commits`` shards are committed and
    return how many were committed when it died."""
    process = subprocess.Popen(
        _worker_command(root, "--delay", "0.1"), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 240
    try:
        while _committed(root) < commits:
            if process.poll() is not None:
                pytest.fail(
                    f"worker exited ({process.returncode}) before {commits} commits: {process.stderr.read()}"
                )
            if time.monotonic() > deadline:
                pytest.fail("worker made no progress within 240 s")
            time.sleep(0.01)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait()
    assert process.returncode == -signal.SIGKILL
    return _committed(root)


@pytest.fixture(scope="module")
def reference_store(tmp_path_factory) -> Path:
    """An uninterrupted single-process run of the worker."""
    return _run_here(tmp_path_factory.mktemp("reference"))


@pytest.mark.slow
def test_sigkill_at_several_points_then_resume_is_byte_identical(tmp_path, reference_store):
    root = tmp_path / "killed"
    first = _kill_after(root, commits=1)
    second = _kill_after(root, commits=first + 2)  # the second process resumed, then died in turn
    assert first < second < 8, "the kills must land before the last of the 8 shards"
    assert [p.name for p in root.iterdir()] == [reference_store.name]  # the killed runs wrote the same store
    kept = {p: p.stat().st_mtime_ns for p in root.glob("*/shards/acts-*.bin") if _has_record(p)}
    resumed = _run_here(root)
    assert resumed.parent == root
    assert {p: p.stat().st_mtime_ns for p in kept} == kept  # committed shards were not rewritten
    assert not list(resumed.rglob("*.tmp.*"))
    assert _store_content(resumed) == _store_content(reference_store)
    Store(resumed, verify="open")


@pytest.mark.slow
@pytest.mark.distributed
def test_two_torchrun_processes_write_the_same_store_as_one(tmp_path, reference_store):
    command = _worker_command(
        tmp_path, launcher=("-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2")
    )
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"torchrun failed:\n{done.stderr[-3000:]}"
    (store,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert store.name == reference_store.name
    assert _store_content(store) == _store_content(reference_store)
