"""Evaluation throughput: rows per second of the streaming evaluator and of the encode-only latent statistics,
for a TopK SAE on the sparse path (codes never densified, decoder over the active rows) and on the dense path.

    python -m benchmarks.bench_eval [--quick]       # writes results/bench/eval.json (quick: quick/eval.json)
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from tabulate import tabulate

from benchmarks.machine import describe_machine, sync, use_quick_results_dir, write_result
from saebench.evaluate import evaluate_sae, latent_statistics
from saebench.sae import create_sae

FULL = {"d": 768, "expansion": 32, "k": 32, "batch": 4096, "batches": 16, "rounds": 3}
QUICK = {"d": 128, "expansion": 32, "k": 32, "batch": 512, "batches": 8, "rounds": 2}


def rows_per_second(run: Callable[[], object], n_rows: int, rounds: int, device: torch.device) -> list[float]:
    """Rows per second of ``run()`` (one pass over ``n_rows`` rows), once per round."""
    rates = []
    for _ in range(rounds):
        sync(device)
        start = time.perf_counter()
        run()
        sync(device)
        rates.append(n_rows / (time.perf_counter() - start))
    return rates


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    if args.quick:
        use_quick_results_dir()
    setting = dict(QUICK if args.quick else FULL)
    device = torch.device(args.device)
    d, h = setting["d"], setting["d"] * setting["expansion"]
    torch.manual_seed(0)
    sae = create_sae("topk", d_in=d, n_latents=h, k=setting["k"]).to(device)
    generator = torch.Generator().manual_seed(1)
    shape = (setting["batch"], d)
    batches = [torch.randn(shape, generator=generator).to(device) for _ in range(setting["batches"])]
    n_rows = setting["batch"] * setting["batches"]
    runs = {
        "evaluate_sae sparse path": (True, lambda: evaluate_sae(sae, batches)),
        "evaluate_sae dense path": (False, lambda: evaluate_sae(sae, batches)),
        "latent_statistics sparse path (encode only)": (True, lambda: latent_statistics(sae, batches)),
        "latent_statistics dense path (encode only)": (False, lambda: latent_statistics(sae, batches)),
    }
    results = {}
    for name, (sparse, run) in runs.items():
        sae.sparse_decoding = sparse
        run()  # warm-up
        rates = rows_per_second(run, n_rows, setting["rounds"], device)
        results[name] = {"rows_per_second_median": statistics.median(rates), "rows_per_second_all": rates}
    payload = {
        "benchmark": "eval_topk",
        "quick": args.quick,
        "machine": describe_machine(device),
        "setting": {**setting, "n_latents": h, "rows_per_pass": n_rows},
        "results": results,
    }
    path = write_result("eval", payload)
    print(
        tabulate(
            [(n, f"{r['rows_per_second_median']:,.0f}") for n, r in results.items()],
            headers=("evaluation", "rows/s"),
        )
    )
    print(f"wrote {path}")
    return payload


if __name__ == "__main__":
    main()
