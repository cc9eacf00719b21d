"""Activation caching and loading throughput (issue 3, "Performance").

1. **Caching vs the bare forward.** The same images go (a) through ``backbone.extract`` alone, already
   preprocessed and in memory, and (b) through :func:`saebench.acts.cache.cache_activations` end to end:
   image reading and preprocessing (one prefetch thread), the forward, token selection, float16 conversion,
   sha256 and atomic shard writes. Rounds alternate (a) and (b) so machine noise hits both; the ratio of
   medians is reported (target: caching >= 0.9x the bare forward). The backbone's one-off weights digest
   (part of the store hash) is timed separately and excluded.
2. **Shuffled loader.** A float16 store of ``--loader-rows`` rows at d=768 (written with ``StoreWriter``) is
   read by :class:`~saebench.acts.loaders.ShuffledLoader` (batches of 4096, default buffer and chunk sizes,
   page cache warm). Epoch 1 includes the lazy sha256 check of every shard; epoch 2 is the steady state.
3. **What the trainer consumes.** Rows/s of the core trainer's TopK step at d=768, expansion 8, k=32, batch
   4096 (``benchmarks.bench_train``'s step), to compare with the loader (target: loader >= 5x the trainer).

    python -m benchmarks.bench_acts          # about 2 minutes on a 2-core CPU; writes results/bench/acts.json

The script runs with ``OMP_WAIT_POLICY=PASSIVE`` unless the variable is set. On a shared, oversubscribed
machine libgomp's default spin-waiting made the same ViT forward 2x slower, and only while no other thread
had run a torch kernel: the cache runner's prefetch thread then changed the bare-forward comparison by 2x.
Passive waiting gives both measurements the same threading behaviour (and was never slower here).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from tabulate import tabulate

from benchmarks.bench_train import saebench_topk_step
from benchmarks.machine import describe_machine, write_result
from saebench.acts.backbones import Backbone, load_backbone
from saebench.acts.cache import cache_activations
from saebench.acts.loaders import ShuffledLoader
from saebench.acts.sources import TensorImageSource
from saebench.acts.store import ShardLayout, Store, StoreWriter


def bare_forward_seconds(backbone: Backbone, images: torch.Tensor, hook: str, batch: int) -> float:
    """Seconds for ``backbone.extract`` over preprocessed ``images`` in batches of ``batch``."""
    start = time.perf_counter()
    for a in range(0, len(images), batch):
        backbone.extract(images[a : a + batch], [hook])
    return time.perf_counter() - start


def caching_seconds(
    backbone: Backbone, source: TensorImageSource, hook: str, batch: int, root: Path
) -> float:
    """Seconds for a complete :func:`cache_activations` run into a fresh folder under ``root``."""
    out = Path(tempfile.mkdtemp(dir=root))
    start = time.perf_counter()
    cache_activations(
        backbone, source, hook, tokens="patches", out_root=out, batch_size=batch, progress=False
    )
    return time.perf_counter() - start


def bench_caching(args: argparse.Namespace, root: Path) -> dict:
    backbone = load_backbone(args.backbone, pretrained=False)
    pixels = np.random.default_rng(0).integers(0, 256, size=(args.images, 256, 256, 3), dtype=np.uint8)
    source = TensorImageSource(pixels, name="bench-random")
    transform = backbone.preprocessing.transform()
    images = torch.stack([transform(source[i].image) for i in range(len(source))])
    start = time.perf_counter()
    backbone.fingerprint([args.hook])  # computes and caches the state-dict sha256
    digest_seconds = time.perf_counter() - start
    backbone.extract(images[: args.batch], [args.hook])  # warm-up
    bare, cached = [], []
    for _ in range(args.rounds):
        bare.append(bare_forward_seconds(backbone, images, args.hook, args.batch))
        cached.append(caching_seconds(backbone, source, args.hook, args.batch, root))
    bare_ips, cache_ips = args.images / statistics.median(bare), args.images / statistics.median(cached)
    return {
        "backbone": args.backbone,
        "hook": args.hook,
        "tokens": "patches",
        "dtype": "float16",
        "images_per_round": args.images,
        "batch_size": args.batch,
        "rounds": args.rounds,
        "bare_forward_seconds": bare,
        "caching_seconds": cached,
        "bare_forward_images_per_s": bare_ips,
        "caching_images_per_s": cache_ips,
        "caching_over_bare": cache_ips / bare_ips,
        "target_caching_over_bare": 0.9,
        "weights_digest_seconds_excluded": digest_seconds,
    }


def write_random_store(root: Path, n_rows: int, d: int, shard_rows: int) -> Store:
    """A float16 store of ``n_rows`` random rows of width ``d`` (one token per image)."""
    layout = ShardLayout(n_rows, shard_rows, batch_size=shard_rows)
    writer = StoreWriter(
        root,
        {"bench": "random", "rows": n_rows, "d": d},
        d=d,
        dtype="float16",
        tokens_per_image=1,
        token_grid=None,
        layout=layout,
    )
    writer.prepare()
    generator = torch.Generator().manual_seed(0)
    for shard in range(layout.n_shards):
        n = len(layout.shard_positions(shard))
        index = np.zeros((n, 3), dtype=np.int64)
        writer.write_shard(shard, torch.randn(n, d, generator=generator), index)
    return writer.finalize()


def bench_loader(args: argparse.Namespace, root: Path) -> dict:
    store = write_random_store(root, args.loader_rows, args.d, shard_rows=1 << 14)
    loader = ShuffledLoader(store, args.loader_batch, seed=0)
    epochs = []
    for _ in range(2):
        start = time.perf_counter()
        rows = sum(len(batch) for batch in loader)
        epochs.append(time.perf_counter() - start)
    assert rows == store.n_rows
    steady = epochs[1]
    return {
        "d": args.d,
        "dtype": "float16",
        "rows": store.n_rows,
        "batch_size": args.loader_batch,
        "buffer_rows": loader.buffer_rows,
        "chunk_rows": loader.chunk_rows,
        "epoch_seconds": epochs,
        "rows_per_s_first_epoch_with_sha256": store.n_rows / epochs[0],
        "rows_per_s": store.n_rows / steady,
        "stored_mb_per_s": store.n_rows * args.d * 2 / steady / 1e6,
        "float32_delivered_mb_per_s": store.n_rows * args.d * 4 / steady / 1e6,
    }


def bench_trainer(args: argparse.Namespace) -> dict:
    step = saebench_topk_step(args.d, args.d * 8, 32, 1e-4, torch.device("cpu"))
    x = torch.randn(args.loader_batch, args.d)
    step(x)  # warm-up
    start = time.perf_counter()
    for _ in range(args.train_steps):
        step(x)
    seconds = (time.perf_counter() - start) / args.train_steps
    return {
        "d": args.d,
        "n_latents": args.d * 8,
        "k": 32,
        "batch_size": args.loader_batch,
        "seconds_per_step": seconds,
        "rows_per_s": args.loader_batch / seconds,
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="vit-b16")
    parser.add_argument("--hook", default="block.11")
    parser.add_argument("--images", type=int, default=16, help="images per timed round")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--d", type=int, default=768)
    parser.add_argument("--loader-rows", type=int, default=1 << 17)
    parser.add_argument("--loader-batch", type=int, default=4096)
    parser.add_argument("--train-steps", type=int, default=3)
    args = parser.parse_args(argv)

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        caching = bench_caching(args, Path(tmp))
        loader = bench_loader(args, Path(tmp))
    trainer = bench_trainer(args)
    payload = {
        "benchmark": "acts",
        "machine": {
            **describe_machine(torch.device("cpu")),
            "load_average_1min": [load_before[0], os.getloadavg()[0]],
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        },
        "caching": caching,
        "shuffled_loader": loader,
        "trainer_topk": trainer,
        "loader_over_trainer": loader["rows_per_s"] / trainer["rows_per_s"],
        "target_loader_over_trainer": 5.0,
    }
    path = write_result("acts", payload)
    print(
        tabulate(
            [
                ["bare forward (images/s)", f"{caching['bare_forward_images_per_s']:.2f}"],
                ["caching (images/s)", f"{caching['caching_images_per_s']:.2f}"],
                ["caching / bare", f"{caching['caching_over_bare']:.3f} (target >= 0.9)"],
                ["shuffled loader (rows/s)", f"{loader['rows_per_s']:,.0f}"],
                ["shuffled loader (stored MB/s)", f"{loader['stored_mb_per_s']:,.0f}"],
                ["trainer TopK (rows/s)", f"{trainer['rows_per_s']:,.0f}"],
                ["loader / trainer", f"{payload['loader_over_trainer']:.1f} (target >= 5)"],
            ],
            tablefmt="github",
        )
    )
    print(f"wrote {path}")
    return payload


if __name__ == "__main__":
    if "OMP_WAIT_POLICY" not in os.environ:  # must be set before OpenMP starts: re-run this script with it
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
        os.execv(sys.executable, [sys.executable, "-m", "benchmarks.bench_acts", *sys.argv[1:]])
    main()
