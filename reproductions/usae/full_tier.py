"""The USAE full tier (paper §4): final-layer patch tokens of SigLIP ViT-B/16, DINOv2 ViT-S/14 and ViT-B/16 on
ImageNet-1k train, a 6,144-concept USAE trained with the authors' step, evaluated on ImageNet val.

:func:`run_full` resolves the user's weights and ImageNet (``requires`` of ``configs/full.yaml``), builds the
registered backbones and calls :func:`run_on_sources`, which caches each model's tokens (CLS dropped; DINOv2's
16 x 16 grid resized to 14 x 14 at caching time, bilinear with antialias, usae.md §1.6) into aligned stores
and runs :func:`~.aligned_experiment.run_aligned_experiment`. The unit test calls :func:`run_on_sources` with
tiny random ViTs and generated images, so this path runs in CI although the tier skips there.

Config keys beyond :mod:`.aligned_experiment`'s::

    models:   {name: {backbone: registry name, weights: requires name, grid: [rows, cols] or absent}}
    cache:    {hook, batch_size, dtype, workers, dir (null: <workdir>/acts)}
    eval:     {split, images}: the held-out split and how many of its first images are evaluated
    device:   where the backbones, the USAE and the SAEs run
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from saebench.acts.backbones.core import Backbone
from saebench.acts.backbones.registry import load_backbone
from saebench.acts.cache import cache_activations
from saebench.acts.sources import ImageFolderSource, subset
from saebench.acts.store import AlignedStores
from saebench.repro.pipeline import PipelineResult
from saebench.repro.tiers import requirement_paths

from .aligned_experiment import run_aligned_experiment

__all__ = ["cache_aligned", "run_on_sources", "run_full"]


def cache_aligned(
    backbones: Mapping[str, Backbone], source: Any, config: Mapping[str, Any], out_root: Path
) -> AlignedStores:
    """Cache ``source`` through every backbone at ``config['cache']['hook']``, patch tokens only, each model's
    grid resized to ``config['models'][name]['grid']`` when given; the stores open as one aligned group
    (same images, order and grid, or an error naming the difference)."""
    cache = config["cache"]
    stores = {}
    for name, backbone in backbones.items():
        grid = config["models"][name].get("grid")
        stores[name] = cache_activations(
            backbone,
            source,
            cache["hook"],
            tokens="patches",
            grid=tuple(grid) if grid else None,
            out_root=out_root,
            batch_size=cache["batch_size"],
            dtype=cache["dtype"],
            workers=cache["workers"],
            progress=cache.get("progress", True),
        )
    return AlignedStores(stores)


def run_on_sources(
    backbones: Mapping[str, Backbone],
    train_source: Any,
    eval_source: Any,
    config: dict[str, Any],
    seed: int,
    workdir: Path,
    figures: tuple[Path, str] | None = None,
) -> PipelineResult:
    """Cache both sources through ``backbones`` (in the config's model order) and run the experiment: train on
    every training image, evaluate on every evaluation image."""
    out_root = Path(config["cache"].get("dir") or Path(workdir) / "acts").expanduser()
    train = cache_aligned(backbones, train_source, config, out_root)
    heldout = cache_aligned(backbones, eval_source, config, out_root)
    fields = {
        "backbone": "+".join(backbones),
        "sae": "usae",
        "variant": config["train"].get("variant", "code"),
    }
    return run_aligned_experiment(
        train,
        np.arange(next(iter(train.values())).n_images),
        heldout,
        np.arange(next(iter(heldout.values())).n_images),
        config,
        seed,
        fields=fields,
        figures=figures,
        device=config.get("device", "cpu"),
    )


def run_full(config: dict[str, Any], seed: int, workdir: Path) -> PipelineResult:
    """The full tier on the user's weights and ImageNet (paths from ``requires``)."""
    paths = requirement_paths(config)
    backbones = {
        name: load_backbone(spec["backbone"], weights=paths[spec["weights"]], device=config["device"])
        for name, spec in config["models"].items()
    }
    train_source = ImageFolderSource(paths["imagenet"], split="train")
    eval_source = subset(
        ImageFolderSource(paths["imagenet"], split=config["eval"]["split"]), first_n=config["eval"]["images"]
    )
    return run_on_sources(backbones, train_source, eval_source, config, seed, workdir)
