"""Wall time of caching every mini-tier store from scratch: the smoke run (1,000 images) and the mini tier
(12,000 images), against the issue's targets (under 2 and under 20 minutes on 2 cores).

Zoo models are trained (or found in the cache) first and timed apart: the targets are for caching, and the
training time of each model is in its record (reported here too). Each plan is then cached into a fresh
temporary folder, so nothing is reused; the manifest's per-backbone seconds show where the time goes. The
load average before and after is recorded: on a shared machine the numbers are only as good as the machine
was idle.

    python -m benchmarks.bench_mini_cache                  # both plans; writes results/bench/mini_cache.json
    python -m benchmarks.bench_mini_cache --plans smoke    # the smoke run only
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch
from tabulate import tabulate

from benchmarks.machine import RESULTS_DIR, describe_machine, write_result
from saebench.zoo.mini_caches import PLANS, cache_mini_tier
from saebench.zoo.registry import ensure_trained

TARGET_SECONDS = {"smoke": 120.0, "mini": 1200.0}


def bench_plan(name: str, batch_size: int, workers: int) -> dict:
    """Cache ``PLANS[name]`` into a fresh folder; return its timings."""
    plan = PLANS[name]
    trained = {role: ensure_trained(entry) for role, entry in plan.zoo.items()}
    with tempfile.TemporaryDirectory(prefix=f"bench-mini-{name}-") as out:
        load_before = os.getloadavg()
        start = time.perf_counter()
        tier = cache_mini_tier(Path(out), plan, batch_size=batch_size, workers=workers, progress=False)
        seconds = time.perf_counter() - start
        load_after = os.getloadavg()
    n_images = tier.manifest["n_images"]
    return {
        "plan": name,
        "n_images": n_images,
        "seconds": seconds,
        "images_per_second": n_images / seconds,
        "target_seconds": TARGET_SECONDS[name],
        "within_target": seconds < TARGET_SECONDS[name],
        "seconds_per_backbone": {k: v for k, v in tier.manifest["seconds"].items() if k != "zoo"},
        "stores": {key: [info["n_rows"], info["d"]] for key, info in tier.manifest["stores"].items()},
        "zoo": {
            role: {
                "config_hash": model.record["config_hash"],
                model.entry.metric: model.accuracy,
                "train_seconds": model.record["train_seconds"],
            }
            for role, model in trained.items()
        },
        "load_average_before": load_before,
        "load_average_after": load_after,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plans", nargs="+", default=["smoke", "mini"], choices=list(PLANS))
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    results = [bench_plan(name, args.batch_size, args.workers) for name in args.plans]
    rows = [
        [
            r["plan"],
            r["n_images"],
            f"{r['seconds']:.0f}",
            f"{r['images_per_second']:.1f}",
            r["target_seconds"],
        ]
        + [r["within_target"], " ".join(f"{k}={v:.0f}s" for k, v in r["seconds_per_backbone"].items())]
        for r in results
    ]
    print(tabulate(rows, headers=["plan", "images", "seconds", "img/s", "target s", "ok", "per backbone"]))
    machine = describe_machine(torch.device("cpu"))
    previous = RESULTS_DIR / "mini_cache.json"
    kept = json.loads(previous.read_text())["results"] if previous.is_file() else {}
    for r in results:
        r.update(machine=machine, batch_size=args.batch_size, workers=args.workers)
    payload = {"results": {**kept, **{r["plan"]: r for r in results}}}  # a plan run alone keeps the other
    print(f"wrote {write_result('mini_cache', payload)}")


if __name__ == "__main__":
    main()
