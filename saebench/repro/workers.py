"""Run a reproduction's independent jobs (one autoencoder architecture each, say) in parallel processes.

A pipeline's module is imported as ``saebench_reproductions.<paper>.<module>``
(:meth:`~saebench.repro.pipeline.Reproduction.pipeline`), a package that exists only in the process that
loaded it. :func:`map_in_workers` starts workers with the ``spawn`` method (a fork after torch has started its
thread pools can hang), registers that package in each worker before any job arrives, and sets the worker's
torch thread count, so a job computes exactly what it would in the parent.
"""

from __future__ import annotations

import multiprocessing
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import torch

from saebench.repro.pipeline import REPRODUCTIONS_PACKAGE, register_reproduction_package

__all__ = ["map_in_workers"]


def _prepare_worker(package: str, folder: str, threads: int) -> None:
    root, _, paper = package.partition(".")
    if root == REPRODUCTIONS_PACKAGE and paper:
        register_reproduction_package(paper, Path(folder))
    torch.set_num_threads(threads)


def map_in_workers(fn: Callable[..., Any], jobs: Sequence[tuple], workers: int) -> list[Any]:
    """``[fn(*job) for job in jobs]``, computed in ``workers`` spawned processes (in this process when
    ``workers <= 1``), in order. ``fn`` must be a module-level function; its arguments and results are
    pickled. Each worker runs with this process's torch thread count."""
    if workers <= 1 or len(jobs) <= 1:
        return [fn(*job) for job in jobs]
    module = sys.modules[fn.__module__]
    package = fn.__module__.rpartition(".")[0]
    init = (package, str(Path(module.__file__).parent), torch.get_num_threads())
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        min(workers, len(jobs)), mp_context=context, initializer=_prepare_worker, initargs=init
    ) as pool:
        return list(pool.map(fn, *zip(*jobs, strict=True)))
