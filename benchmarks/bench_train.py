"""Training throughput, peak memory and roofline of TopK SAEs: saebench's sparse and dense paths and the peer
overcomplete, doing the same training steps (issue 10).

Every implementation does, per step on a ``(batch, d)`` float32 batch: encoder matmul, per-row top-k, decoder,
MSE, backward, Adam update. ``saebench-sparse`` / ``saebench-dense`` are saebench's real trainer step (it also
removes the parallel decoder-gradient component, re-normalises decoder rows, checks the batch for NaN/Inf and
tracks dead latents) on the sparse path (:mod:`saebench.sae.sparse_decode`) or with ``sparse_decoding =
False``; ``overcomplete`` is the plain loop around its ``TopKSAE`` with a ``linear`` encoder (its dictionary
layer re-normalises atoms on every forward); ``sae-lens`` (when installed: the ``bench`` extra) the same loop
around its ``TopKTrainingSAE``. ``saebench-sparse-bf16`` (headline setting only) adds bf16
autocast.

Per setting and implementation: a warm-up step (during which the bytes autograd saves for the backward are
recorded), one step under :class:`~benchmarks.machine.PeakMemory`, then ``rounds`` rounds of ``steps`` steps
with the implementations interleaved round by round, so machine noise hits all alike; medians are reported.

**Roofline.** The least work of one TopK training step is the encoder's forward and weight-gradient matmuls,
``4·d·h`` flops per sample, plus the sparse decoder's forward and backward, ``6·k·d`` (issue 10). Each
setting's throughput is reported as a fraction of ``matmul rate / (4·d·h + 6·k·d)``, the matmul rate measured
in the same run on the encoder's ``(batch, d) @ (d, h)`` product. The sparse path also computes the encoder
weight gradient from the ``k`` selected entries only (``2·k·d``), so its least work is ``2·d·h + 8·k·d``;
``fraction_of_encoder_forward_bound`` reports throughput against that bound too (it can exceed the issue's
roofline by up to 2x).

    python -m benchmarks.bench_train            # the issue's grid (long: see docs/performance.md)
    python -m benchmarks.bench_train --quick    # a smoke run at small sizes
    python -m benchmarks.bench_train --expansions 16 64 --merge   # part of the grid, kept beside the rest
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from tabulate import tabulate

from benchmarks.machine import (
    PeakMemory,
    describe_machine,
    matmul_flops_per_second,
    results_dir,
    saved_for_backward,
    sync,
    use_quick_results_dir,
    write_result,
)
from saebench.peers import import_overcomplete, import_sae_lens
from saebench.sae import create_sae
from saebench.train import TrainConfig, Trainer

FULL = {"d": 768, "expansions": (8, 16, 32, 64), "ks": (32, 64), "batch": 4096, "steps": 1, "rounds": 3}
QUICK = {"d": 128, "expansions": (8, 32), "ks": (32,), "batch": 512, "steps": 2, "rounds": 2}
HEADLINE = {"expansion": 32, "k": 32}  # the targets: >= 2x overcomplete, >= 50% of the roofline
TARGET_SPEEDUP_OVER_OVERCOMPLETE = 2.0
TARGET_FRACTION_OF_ROOFLINE = 0.5


@dataclass
class TrainingStep:
    """One implementation's training step on a batch, and the parameters it trains (for the memory probes)."""

    run: Callable[[torch.Tensor], object]
    parameters: Callable[[], Iterator[torch.nn.Parameter]]

    def __call__(self, x: torch.Tensor) -> None:
        self.run(x)


def saebench_topk_step(
    d: int, h: int, k: int, lr: float, device: torch.device, sparse: bool = True, amp_dtype: str | None = None
) -> TrainingStep:
    """saebench's trainer step for a TopK SAE, on the sparse path or (``sparse=False``) the dense one."""
    sae = create_sae("topk", d_in=d, n_latents=h, k=k).to(device)
    sae.sparse_decoding = sparse
    trainer = Trainer(sae, TrainConfig(total_steps=10**9, lr=lr, progress=False, amp_dtype=amp_dtype))
    trainer.prepare()
    return TrainingStep(trainer.train_step, sae.parameters)


def overcomplete_topk_step(d: int, h: int, k: int, lr: float, device: torch.device) -> TrainingStep:
    """overcomplete's ``TopKSAE`` (linear encoder) in a plain Adam loop on the MSE."""
    overcomplete = import_overcomplete()
    model = overcomplete.sae.TopKSAE(d, h, top_k=k, encoder_module="linear", device=str(device))
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)

    def step(x: torch.Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        _, _, x_hat = model(x)
        loss = (x - x_hat).square().mean()
        loss.backward()
        optimizer.step()

    return TrainingStep(step, model.parameters)


def sae_lens_topk_step(
    d: int, h: int, k: int, lr: float, device: torch.device, sparse_activations: bool = False
) -> TrainingStep:
    """sae-lens's ``TopKTrainingSAE`` in a plain Adam loop on the MSE (its own training loss adds an AuxK term
    and logging; left out so that every implementation does the same step). ``sparse_activations``: its
    ``use_sparse_activations`` option (codes as a torch sparse tensor)."""
    sae_lens = import_sae_lens()
    config = sae_lens.TopKTrainingSAEConfig(
        d_in=d, d_sae=h, k=k, device=str(device), use_sparse_activations=sparse_activations
    )
    model = sae_lens.TopKTrainingSAE(config)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)

    def step(x: torch.Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        x_hat = model.decode(model.encode(x))
        loss = (x - x_hat).square().mean()
        loss.backward()
        optimizer.step()

    return TrainingStep(step, model.parameters)


def _peer_available(importer: Callable[[], object]) -> bool:
    try:
        importer()
    except ImportError:
        return False
    return True


IMPLEMENTATIONS: dict[str, Callable[..., TrainingStep]] = {
    "saebench-sparse": saebench_topk_step,
    "saebench-dense": lambda *args: saebench_topk_step(*args, sparse=False),
    "overcomplete": overcomplete_topk_step,
}
if _peer_available(import_sae_lens):  # optional: `pip install -e .[bench]`
    IMPLEMENTATIONS["sae-lens"] = sae_lens_topk_step
HEADLINE_EXTRAS: dict[str, Callable[..., TrainingStep]] = {
    "saebench-sparse-bf16": lambda *args: saebench_topk_step(*args, amp_dtype="bf16"),
}


def least_work_flops_per_sample(d: int, h: int, k: int) -> dict[str, float]:
    """The two bounds of the module docstring, in flops per sample."""
    return {"roofline": 4.0 * d * h + 6.0 * k * d, "encoder_forward_bound": 2.0 * d * h + 8.0 * k * d}


def time_steps(step: TrainingStep, x: torch.Tensor, n_steps: int, device: torch.device) -> float:
    """Mean seconds per step over ``n_steps`` consecutive steps."""
    sync(device)
    start = time.perf_counter()
    for _ in range(n_steps):
        step(x)
    sync(device)
    return (time.perf_counter() - start) / n_steps


def bench_setting(
    d: int, expansion: int, k: int, batch: int, steps: int, rounds: int, device: torch.device, extras: bool
) -> dict:
    """Every implementation at one setting; see the module docstring."""
    h = d * expansion
    torch.manual_seed(0)
    x = torch.randn(batch, d, device=device)
    factories = {**IMPLEMENTATIONS, **(HEADLINE_EXTRAS if extras else {})}
    impls = {name: factory(d, h, k, 1e-4, device) for name, factory in factories.items()}
    memory = {}
    for name, step in impls.items():
        with saved_for_backward(step.parameters) as saved:
            step(x)  # warm-up: allocator, optimizer state
        with PeakMemory(device) as peak:
            step(x)
        memory[name] = {"saved": saved, "peak": peak.bytes, "peak_method": peak.method}
    seconds: dict[str, list[float]] = {name: [] for name in impls}
    for _ in range(rounds):
        for name, step in impls.items():
            seconds[name].append(time_steps(step, x, steps, device))
    del impls
    gc.collect()
    matmul_rate = matmul_flops_per_second(batch, d, h, device, repeats=3)
    bounds = least_work_flops_per_sample(d, h, k)
    rows = {}
    for name, times in seconds.items():
        median = statistics.median(times)
        samples_per_s = batch / median
        encoder_forward_fraction = samples_per_s * bounds["encoder_forward_bound"] / matmul_rate
        rows[name] = {
            "seconds_per_step_median": median,
            "seconds_per_step_all": times,
            "samples_per_second": samples_per_s,
            "fraction_of_roofline": samples_per_s * bounds["roofline"] / matmul_rate,
            "fraction_of_encoder_forward_bound": encoder_forward_fraction,
            "peak_memory_bytes": memory[name]["peak"],
            "peak_memory_method": memory[name]["peak_method"],
            "saved_for_backward_bytes": memory[name]["saved"]["bytes"],
            "largest_saved_for_backward_shape": memory[name]["saved"]["largest_shape"],
        }
    return {
        "d": d,
        "expansion": expansion,
        "n_latents": h,
        "k": k,
        "batch": batch,
        "dtype": "float32",
        "steps_per_round": steps,
        "rounds": rounds,
        "matmul_flops_per_second": matmul_rate,
        "least_work_flops_per_sample": bounds,
        "batch_by_latents_elements": batch * h,
        "results": rows,
    }


def check_targets(settings: list[dict]) -> dict:
    """The issue's targets, evaluated on the headline setting and the largest expansion that ran."""
    targets: dict = {}
    headline = next(
        (s for s in settings if (s["expansion"], s["k"]) == (HEADLINE["expansion"], HEADLINE["k"])), None
    )
    if headline is not None:
        ours, peer = headline["results"]["saebench-sparse"], headline["results"]["overcomplete"]
        speedup = ours["samples_per_second"] / peer["samples_per_second"]
        targets["headline"] = {
            "setting": dict(HEADLINE),
            "sparse_over_overcomplete": speedup,
            "target_sparse_over_overcomplete": TARGET_SPEEDUP_OVER_OVERCOMPLETE,
            "sparse_fraction_of_roofline": ours["fraction_of_roofline"],
            "target_fraction_of_roofline": TARGET_FRACTION_OF_ROOFLINE,
            "met": speedup >= TARGET_SPEEDUP_OVER_OVERCOMPLETE
            and ours["fraction_of_roofline"] >= TARGET_FRACTION_OF_ROOFLINE,
        }
    widest = max(settings, key=lambda s: (s["expansion"], -s["k"]))
    largest = {name: r["largest_saved_for_backward_shape"] for name, r in widest["results"].items()}
    targets["memory"] = {
        "setting": {"expansion": widest["expansion"], "k": widest["k"], "batch": widest["batch"]},
        "largest_saved_for_backward_shape": largest,
        "met": math.prod(largest["saebench-sparse"]) < widest["batch_by_latents_elements"],
        "rule": "no tensor of batch x n_latents elements is saved for the backward on the sparse path "
        "(the encoder's pre-activations are returned, not saved)",
    }
    return targets


def merged_with_earlier(settings: list[dict], grid: dict, machine: dict) -> tuple[list[dict], dict]:
    """This run's settings plus those of ``results/bench/train.json`` at other (expansion, k), sorted; the
    grid lists the union. Refused when the two runs differ in anything but the grid's expansions and ks, or
    ran on another machine (CPU, device, torch), since their numbers would not be comparable."""
    path = results_dir() / "train.json"
    if not path.exists():
        return settings, grid
    earlier = json.loads(path.read_text())
    fixed = ("d", "batch", "steps", "rounds")
    if any(earlier["grid"][key] != grid[key] for key in fixed):
        raise SystemExit(f"--merge: {path} was measured with another {fixed} than this run; rerun its grid")
    same_machine = ("device_name", "cpu", "cpu_count", "torch")
    if any(earlier["machine"].get(key) != machine.get(key) for key in same_machine):
        raise SystemExit(f"--merge: {path} was measured on another machine ({same_machine}); rerun its grid")
    measured = {(s["expansion"], s["k"]) for s in settings}
    kept = [s for s in earlier["settings"] if (s["expansion"], s["k"]) not in measured]
    for s in kept:  # settings from before per-setting load averages were recorded carry the run's
        s.setdefault(
            "load_average_1min",
            [earlier["machine"].get("load_average_1min"), earlier["machine"].get("load_average_1min_end")],
        )
    merged = sorted(kept + settings, key=lambda s: (s["expansion"], s["k"]))
    union = {
        **grid,
        "expansions": sorted({s["expansion"] for s in merged}),
        "ks": sorted({s["k"] for s in merged}),
    }
    return merged, union


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run of a few minutes")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--expansions", type=int, nargs="+", help="override the grid's expansion factors")
    parser.add_argument("--ks", type=int, nargs="+", help="override the grid's k values")
    parser.add_argument("--rounds", type=int, help="override the number of timed rounds")
    parser.add_argument(
        "--merge",
        action="store_true",
        help="keep the settings of the existing train.json that this run does not measure (a grid in parts)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        use_quick_results_dir()

    grid = dict(QUICK if args.quick else FULL)
    for key in ("expansions", "ks", "rounds"):
        if getattr(args, key) is not None:
            grid[key] = tuple(getattr(args, key)) if key != "rounds" else args.rounds
    device = torch.device(args.device)
    machine = describe_machine(device)
    settings = []
    for expansion in grid["expansions"]:
        for k in grid["ks"]:
            extras = (expansion, k) == (HEADLINE["expansion"], HEADLINE["k"])
            load_before = describe_machine(device).get("load_average_1min")
            setting = bench_setting(
                grid["d"], expansion, k, grid["batch"], grid["steps"], grid["rounds"], device, extras
            )
            setting["load_average_1min"] = [load_before, describe_machine(device).get("load_average_1min")]
            settings.append(setting)
            print(
                tabulate(
                    [
                        (
                            name,
                            f"{r['samples_per_second']:.0f}",
                            f"{r['fraction_of_roofline']:.2f}",
                            f"{r['peak_memory_bytes'] / 2**20:.0f}",
                            f"{r['saved_for_backward_bytes'] / 2**20:.0f}",
                        )
                        for name, r in setting["results"].items()
                    ],
                    headers=(f"x{expansion} k={k}", "samples/s", "of roofline", "peak MiB", "saved MiB"),
                ),
                flush=True,
            )
    machine = {**machine, "load_average_1min_end": describe_machine(device).get("load_average_1min")}
    grid = {key: list(value) if isinstance(value, tuple) else value for key, value in grid.items()}
    if args.merge:
        settings, grid = merged_with_earlier(settings, grid, machine)
    result = {
        "benchmark": "train_topk",
        "quick": args.quick,
        "machine": machine,
        "grid": grid,
        "settings": settings,
        "targets": check_targets(settings),
    }
    path = write_result("train", result)
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()
