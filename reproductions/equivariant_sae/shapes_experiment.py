"""The Shapes experiment (mini tier): Shapes world -> base autoencoder -> orbit latents -> M, SAEs, probes.

For each autoencoder architecture in ``autoencoders`` (README ``--ae-architecture``): train it on the
world's images with rotation augmentation (:mod:`.autoencoders`), take the latents of every orbit member
``(n, 4, latent)`` scaled to unit standard deviation overall, and run :func:`.orbit_saes.run_orbit_saes` on
them (M fit, SAEs, probes; the ``group-action`` run also gets the autoencoder's last-epoch pixel MSE
``ae_mse``). ``ae_device`` (default ``cpu``; ``auto``: CUDA when available) is where the autoencoders train;
with ``ae_cache: true`` they are read from (or saved to) ``$SAEBENCH_CACHE/shapes-ae`` (:mod:`.ae_cache`);
with ``workers: N`` the architectures run in N processes (:func:`saebench.repro.workers.map_in_workers`), with
the same numbers as one after the other;
the SAEs and probes always run on the CPU. Probe tasks: every single-factor one-vs-rest task of
``probes.factors`` (default: shape, colour, size, orientation, quadrant); factor groups ``invariant``
(shape, colour, size: unchanged by rotation) and ``oriented`` (orientation, quadrant). Outputs in
``workdir``: ``probe_results/results_<n>.csv`` per truncation length (:mod:`.probe_report`); with ``figure``
set, the probe-F1 figure at that path (relative to the working directory; ``-seed<N>`` is added to its name
for seeds other than 0, as for run records).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from saebench.data.shapes import ShapesConfig, ShapesWorld
from saebench.metrics.probing import factor_probe_tasks
from saebench.repro.pipeline import Run
from saebench.repro.workers import map_in_workers

from .ae_cache import trained_autoencoder
from .autoencoders import encode_orbits
from .orbit_saes import run_orbit_saes
from .probe_report import plot_probe_f1, write_probe_tables

FACTOR_GROUPS = {"invariant": ("shape", "colour", "size"), "oriented": ("orientation", "quadrant")}


def figure_path(template: str, seed: int) -> Path:
    """``template`` for seed 0, else with ``-seed<N>`` before the suffix."""
    path = Path(template)
    return path if seed == 0 else path.with_name(f"{path.stem}-seed{seed}{path.suffix}")


def resolve_device(name: str) -> torch.device:
    """``"auto"``: CUDA when available, else the CPU; otherwise the named torch device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _shapes_data(config: dict[str, Any], seed: int) -> tuple[ShapesWorld, tuple, list]:
    """The world, its ``(orbit images, orbit labels)`` and the probe tasks."""
    world = ShapesWorld(ShapesConfig(**config["shapes"], seed=seed))
    factors = config["probes"].get("factors", [f for group in FACTOR_GROUPS.values() for f in group])
    return world, world.orbits(), factor_probe_tasks(world.n_values, single=factors)


def _architecture_runs(
    world: ShapesWorld, orbits: tuple, tasks: list, config: dict[str, Any], seed: int, arch: str
) -> tuple[list[Run], list[dict[str, Any]]]:
    """One autoencoder's part: train (or read) it, encode the orbits, then M, SAEs and probes. It starts
    from its own seeds, so its numbers do not depend on the other architectures or their order."""
    model, ae_mse = trained_autoencoder(
        arch,
        world.config,
        world.images,
        config["ae"],
        seed,
        resolve_device(config.get("ae_device", "cpu")),
        cache=config.get("ae_cache", False),
    )
    images, labels = orbits
    acts = encode_orbits(model, images)
    acts = acts / acts.reshape(-1, acts.shape[-1]).std()
    runs, rows = run_orbit_saes(acts, labels, tasks, config, seed, backbone=arch)
    return [Run(runs[0].fields, {**runs[0].metrics, "ae_mse": ae_mse}), *runs[1:]], rows


def _architecture_runs_in_worker(config: dict[str, Any], seed: int, arch: str):
    """:func:`_architecture_runs` in a worker process, which builds its own copy of the world."""
    return _architecture_runs(*_shapes_data(config, seed), config, seed, arch)


def run_shapes(config: dict[str, Any], seed: int, workdir: Path) -> list[Run]:
    config = {**config, "probes": {"groups": FACTOR_GROUPS, **config["probes"]}}
    architectures = config["autoencoders"]
    workers = int(config.get("workers", 1))
    if workers > 1:
        jobs = [(config, seed, arch) for arch in architectures]
        parts = map_in_workers(_architecture_runs_in_worker, jobs, workers)
    else:
        data = _shapes_data(config, seed)
        parts = [_architecture_runs(*data, config, seed, arch) for arch in architectures]
    runs = [run for arch_runs, _ in parts for run in arch_runs]
    probe_rows = [row for _, rows in parts for row in rows]
    write_probe_tables(probe_rows, workdir / "probe_results")
    if config.get("figure"):
        plot_probe_f1(probe_rows, figure_path(config["figure"], seed), title=f"Shapes probes, seed {seed}")
    return runs
