"""Run every benchmark: ``python -m benchmarks [--quick] [--device cpu|cuda] [--only NAME ...]``.

``--report-only`` rewrites ``results/bench/README.md`` from the JSON files already there and runs nothing.

Writes ``results/bench/<name>.json`` for each benchmark and ``results/bench/README.md`` (markdown tables with
the machine described). ``--quick`` is a smoke run at small sizes that writes to ``results/bench/quick/``
instead, so it never overwrites the full results. Benchmarks owned by other modules (``bench_acts``,
``bench_mini_cache``) run when their module exists; in quick mode with their ``QUICK_ARGS`` (or the small
arguments listed here), else they are skipped. On a GPU the full-tier wall-time estimates are written too
(:mod:`benchmarks.full_tier`).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import inspect
import json
import sys
import traceback

import torch

from benchmarks import machine
from benchmarks.full_tier import full_tier_estimates
from benchmarks.report import write_readme

# name -> (module, takes --quick/--device, quick arguments when it does not)
BENCHMARKS = {
    "train": ("benchmarks.bench_train", True, None),
    "eval": ("benchmarks.bench_eval", True, None),
    "acts": (
        "benchmarks.bench_acts",
        False,
        ["--images", "4", "--batch", "2", "--rounds", "1", "--loader-rows", "16384", "--train-steps", "1"],
    ),
    "mini_cache": ("benchmarks.bench_mini_cache", False, None),
}


def _argv(name: str, module, quick: bool, device: str) -> list[str] | None:
    """The arguments to run ``module`` with, or ``None`` to skip it."""
    _, native, known_quick = BENCHMARKS[name]
    if native:
        return (["--quick"] if quick else []) + ["--device", device]
    if not quick:
        return []
    return getattr(module, "QUICK_ARGS", known_quick)


def _run(name: str, module, argv: list[str]) -> dict:
    """``module.main(argv)``; a ``main()`` without parameters reads ``sys.argv`` instead, and one that returns
    nothing is read back from the JSON it wrote (``<results dir>/<name>.json``)."""
    if inspect.signature(module.main).parameters:
        payload = module.main(argv)
    else:
        saved, sys.argv = sys.argv, [module.__name__, *argv]
        try:
            payload = module.main()
        finally:
            sys.argv = saved
    if payload is None:
        path = machine.results_dir() / f"{name}.json"
        payload = json.loads(path.read_text()) if path.exists() else {}
    return payload


def _all_results(fresh: dict[str, dict]) -> dict[str, dict]:
    """This run's results, plus those of earlier runs still in the results folder (``--only`` runs add up),
    in the order of ``BENCHMARKS``."""
    paths = sorted(machine.results_dir().glob("*.json"))
    merged = {**{path.stem: json.loads(path.read_text()) for path in paths}, **fresh}
    order = [*BENCHMARKS, "full_tier_estimates"]
    rank = {name: i for i, name in enumerate(order)}
    return dict(sorted(merged.items(), key=lambda item: rank.get(item[0], len(order))))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes; writes results/bench/quick/")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--only", nargs="+", choices=sorted(BENCHMARKS), help="run only these benchmarks")
    parser.add_argument(
        "--report-only", action="store_true", help="rewrite README.md from the JSON files; run nothing"
    )
    args = parser.parse_args(argv)
    if args.quick:
        machine.use_quick_results_dir()
    if args.report_only:
        command = "python -m benchmarks --report-only" + (" --quick" if args.quick else "")
        print(f"wrote {write_readme(machine.results_dir() / 'README.md', _all_results({}), {}, command)}")
        return 0
    results: dict[str, dict] = {}
    failures: dict[str, str] = {}
    for name in args.only or BENCHMARKS:
        module_name = BENCHMARKS[name][0]
        if importlib.util.find_spec(module_name) is None:
            print(f"[{name}] {module_name} does not exist yet: skipped", flush=True)
            continue
        module = importlib.import_module(module_name)
        module_argv = _argv(name, module, args.quick, args.device)
        if module_argv is None:
            print(f"[{name}] has no quick mode (no QUICK_ARGS): skipped", flush=True)
            continue
        print(f"[{name}] python -m {module_name} {' '.join(module_argv)}", flush=True)
        try:
            results[name] = _run(name, module, module_argv)
        except Exception:  # one benchmark failing must not lose the others' results
            failures[name] = traceback.format_exc()
            print(failures[name], file=sys.stderr, flush=True)
    if "train" in results and torch.device(args.device).type == "cuda":
        results["full_tier_estimates"] = full_tier_estimates(results["train"])
        machine.write_result("full_tier_estimates", results["full_tier_estimates"])
    command = "python -m benchmarks" + (" --quick" if args.quick else "")
    readme = write_readme(machine.results_dir() / "README.md", _all_results(results), failures, command)
    print(f"wrote {readme}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
