"""The Shapes experiment (mini tier): Shapes world -> base autoencoder -> orbit latents -> M, SAEs, probes.

For each autoencoder architecture in ``autoencoders`` (README ``--ae-architecture``): train it on the
world's images with rotation augmentation (:mod:`.autoencoders`), take the latents of every orbit member
``(n, 4, latent)`` scaled to unit standard deviation overall, and run :func:`.orbit_saes.run_orbit_saes` on
them (M fit, SAEs, probes; the ``group-action`` run also gets the autoencoder's last-epoch pixel MSE
``ae_mse``). ``ae_device`` (default ``cpu``; ``auto``: CUDA when available) is where the autoencoders train;
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

from .autoencoders import build_autoencoder, encode_orbits, train_autoencoder
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


def run_shapes(config: dict[str, Any], seed: int, workdir: Path) -> list[Run]:
    world = ShapesWorld(ShapesConfig(**config["shapes"], seed=seed))
    images, labels = world.orbits()
    factors = config["probes"].get("factors", [f for group in FACTOR_GROUPS.values() for f in group])
    tasks = factor_probe_tasks(world.n_values, single=factors)
    config = {**config, "probes": {"groups": FACTOR_GROUPS, **config["probes"]}}
    device = resolve_device(config.get("ae_device", "cpu"))
    runs, probe_rows = [], []
    for arch in config["autoencoders"]:
        torch.manual_seed(seed)
        ae = config["ae"]
        model = build_autoencoder(arch, world.config.image_size, ae["latent_dim"]).to(device)
        ae_mse = train_autoencoder(model, world.images.to(device), ae["epochs"], lr=ae["lr"], seed=seed)
        acts = encode_orbits(model, images)
        acts = acts / acts.reshape(-1, acts.shape[-1]).std()
        arch_runs, rows = run_orbit_saes(acts, labels, tasks, config, seed, backbone=arch)
        runs.append(Run(arch_runs[0].fields, {**arch_runs[0].metrics, "ae_mse": ae_mse}))
        runs.extend(arch_runs[1:])
        probe_rows.extend(rows)
    write_probe_tables(probe_rows, workdir / "probe_results")
    if config.get("figure"):
        plot_probe_f1(probe_rows, figure_path(config["figure"], seed), title=f"Shapes probes, seed {seed}")
    return runs
