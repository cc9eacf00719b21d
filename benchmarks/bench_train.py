"""Training throughput of a TopK SAE: saebench's trainer vs overcomplete's TopKSAE doing the same steps.

Both do, per step on a ``(batch, d)`` fp32 batch: encoder matmul, per-row top-k, dense decoder matmul, MSE,
backward, Adam update. saebench's step is its real trainer step (it also removes the parallel decoder-gradient
component, re-normalises decoder rows, checks the batch for NaN/Inf and tracks dead latents), overcomplete's is
the plain loop around its ``TopKSAE`` with a ``linear`` encoder (its dictionary layer re-normalises atoms on
every forward). The two run interleaved, round by round, so machine noise hits both alike; we report medians
and the ratio.

Flops of one dense step (matmuls only): forward encoder ``2Bdh`` + decoder ``2Bhd``; backward: encoder weight
gradient ``2Bdh``, decoder weight gradient ``2Bhd``, gradient w.r.t. the codes ``2Bhd`` -> ``10·B·d·h``. The
machine's matmul rate is measured in the same run on the encoder-sized matmul ``(B, d) @ (d, h)``.

    python -m benchmarks.bench_train            # d=768, expansion 8, k=32, batch 4096 (issue 2's setting)
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from tabulate import tabulate

from benchmarks.machine import describe_machine, matmul_flops_per_second, sync, write_result
from saebench.peers import import_overcomplete
from saebench.sae import create_sae
from saebench.train import TrainConfig, Trainer

Step = Callable[[torch.Tensor], None]


def saebench_topk_step(d: int, h: int, k: int, lr: float, device: torch.device) -> Step:
    sae = create_sae("topk", d_in=d, n_latents=h, k=k).to(device)
    trainer = Trainer(sae, TrainConfig(total_steps=10**9, lr=lr, progress=False))
    trainer.prepare()
    return trainer.train_step


def overcomplete_topk_step(d: int, h: int, k: int, lr: float, device: torch.device) -> Step:
    overcomplete = import_overcomplete()
    model = overcomplete.sae.TopKSAE(d, h, top_k=k, encoder_module="linear", device=str(device))
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)

    def step(x: torch.Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        _, _, x_hat = model(x)
        loss = (x - x_hat).square().mean()
        loss.backward()
        optimizer.step()

    return step


def time_steps(step: Step, x: torch.Tensor, n_steps: int, device: torch.device) -> float:
    """Mean seconds per step over ``n_steps`` consecutive steps."""
    sync(device)
    start = time.perf_counter()
    for _ in range(n_steps):
        step(x)
    sync(device)
    return (time.perf_counter() - start) / n_steps


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--d", type=int, default=768)
    parser.add_argument("--expansion", type=int, default=8)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--steps", type=int, default=3, help="steps per timed round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--name", default="train_topk", help="results/bench/<name>.json")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    d, h, k, batch = args.d, args.d * args.expansion, args.k, args.batch
    torch.manual_seed(0)
    x = torch.randn(batch, d, device=device)
    impls = {
        "saebench": saebench_topk_step(d, h, k, 1e-4, device),
        "overcomplete": overcomplete_topk_step(d, h, k, 1e-4, device),
    }
    for step in impls.values():  # warm-up: allocator, optimizer state
        step(x)
    seconds: dict[str, list[float]] = {name: [] for name in impls}
    for _ in range(args.rounds):
        for name, step in impls.items():
            seconds[name].append(time_steps(step, x, args.steps, device))
    matmul_rate = matmul_flops_per_second(batch, d, h, device)

    step_flops = 10.0 * batch * d * h
    rows = {}
    for name, times in seconds.items():
        median = statistics.median(times)
        rows[name] = {
            "seconds_per_step_median": median,
            "seconds_per_step_all": times,
            "samples_per_second": batch / median,
            "flops_per_second": step_flops / median,
            "fraction_of_matmul_rate": step_flops / median / matmul_rate,
        }
    result = {
        "benchmark": "topk_training_throughput",
        "setting": {"d": d, "expansion": args.expansion, "n_latents": h, "k": k, "batch": batch, "dtype": "float32",
                    "steps_per_round": args.steps, "rounds": args.rounds},
        "machine": describe_machine(device),
        "matmul_flops_per_second": matmul_rate,
        "step_flops_dense": step_flops,
        "results": rows,
        "speedup_saebench_over_overcomplete": rows["overcomplete"]["seconds_per_step_median"]
        / rows["saebench"]["seconds_per_step_median"],
    }
    path = write_result(args.name, result)
    print(tabulate(
        [(n, f"{r['samples_per_second']:.0f}", f"{r['flops_per_second'] / 1e9:.1f}", f"{r['fraction_of_matmul_rate']:.2f}")
         for n, r in rows.items()],
        headers=("implementation", "samples/s", "GFLOP/s", "of matmul rate"),
    ))
    print(f"matmul rate {matmul_rate / 1e9:.1f} GFLOP/s; saebench / overcomplete speed ratio "
          f"{result['speedup_saebench_over_overcomplete']:.2f}; wrote {path}")
    return result


if __name__ == "__main__":
    main()
