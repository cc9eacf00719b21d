"""The GalaxyMNIST experiment (full tier): GalaxyMNIST -> Zoobot stage-1 activations of every C4 orbit member
-> M, SAEs, probes (README ``03_galaxy_train.py``, ``03_galaxy_train_archetypal.py``,
``05_galaxy_probes.py --probe-trunc-length 8 16``).

The GalaxyMNIST root and the Zoobot weights come from the tier's ``requires`` (names ``galaxy_mnist`` and
``zoobot_weights``). The canonical train split trains M and the SAEs, the test split measures
(:func:`.orbit_saes.run_orbit_saes` with ``n_train`` = the train split's size); the activations
(:func:`saebench.data.galaxy.zoobot_orbit_activations`, ``hook``, ``image_size``) are scaled to unit standard
deviation overall, like the Shapes latents. Probe tasks: the four classes, one-vs-rest (the authors' Galaxy
tasks are unknown). Config keys beyond the Shapes experiment's: ``hook``, ``input_dim`` (checked against the
activations), ``image_size``, ``device`` (where Zoobot runs; ``auto``: CUDA when available), ``limit``
(first rows of each split; ``null`` for all). Outputs as in :mod:`.shapes_experiment`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from saebench.data.galaxy import (
    GALAXY_MNIST_CLASSES,
    build_zoobot_encoder,
    load_galaxy_mnist,
    zoobot_orbit_activations,
)
from saebench.data.shapes import GROUP_ORDER
from saebench.metrics.probing import factor_probe_tasks
from saebench.repro.pipeline import Run
from saebench.repro.tiers import requirement_paths

from .orbit_saes import run_orbit_saes
from .probe_report import plot_probe_f1, write_probe_tables
from .shapes_experiment import figure_path, resolve_device


def run_galaxy(config: dict[str, Any], seed: int, workdir: Path) -> list[Run]:
    paths = requirement_paths(config)
    limit = config.get("limit")
    splits = [load_galaxy_mnist(paths["galaxy_mnist"], split, limit) for split in ("train", "test")]
    images = torch.cat([images for images, _ in splits])
    classes = torch.cat([labels for _, labels in splits])
    encoder = build_zoobot_encoder(paths["zoobot_weights"], hook=config["hook"])
    device = resolve_device(config.get("device", "auto"))
    acts = zoobot_orbit_activations(encoder, images, image_size=config["image_size"], device=str(device))
    if acts.shape[-1] != config["input_dim"]:
        raise ValueError(
            f"Zoobot hook {config['hook']} gives {acts.shape[-1]}-d activations, but input_dim is "
            f"{config['input_dim']}: check the hook and the encoder weights"
        )
    acts = acts / acts.reshape(-1, acts.shape[-1]).std()
    labels = {"class": classes[:, None].expand(-1, GROUP_ORDER)}  # the class is rotation-invariant
    tasks = factor_probe_tasks({"class": len(GALAXY_MNIST_CLASSES)}, single=["class"])
    torch.manual_seed(seed)
    runs, rows = run_orbit_saes(
        acts, labels, tasks, config, seed, backbone="zoobot", n_train=len(splits[0][1])
    )
    write_probe_tables(rows, workdir / "probe_results")
    if config.get("figure"):
        plot_probe_f1(rows, figure_path(config["figure"], seed), title=f"GalaxyMNIST probes, seed {seed}")
    return runs
