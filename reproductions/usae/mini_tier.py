"""The USAE mini tier: the aligned group of the mini-tier caches (``docs/mini-tier.md``) — EfficientNet-Lite0
(ImageNet weights), the zoo CNN and the zoo ViT, each a 7 x 7 grid of patch tokens of the same 12,000
Fashion-MNIST images — trained on the first images and evaluated on the last ``heldout_images`` of them.

The manifest is the tier's ``requires`` entry ``mini_manifest`` (``configs/mini.yaml``): without it the tier
skips, saying to run ``saebench cache-mini``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from saebench.repro.pipeline import PipelineResult
from saebench.repro.tiers import requirement_paths
from saebench.zoo.mini_caches import open_mini_tier

from .aligned_experiment import run_aligned_experiment

__all__ = ["run_mini"]


def run_mini(config: dict[str, Any], seed: int) -> PipelineResult:
    """Train on images ``[0, n - heldout_images)`` of the aligned group, evaluate on the rest; figures go to
    ``config['figures_dir']`` with the suffix ``mini``."""
    manifest = requirement_paths(config)["mini_manifest"]
    aligned = open_mini_tier(manifest.parent, plan=config.get("plan", "mini")).aligned()
    n_images = next(iter(aligned.values())).n_images
    heldout = config["heldout_images"]
    if not 0 < heldout < n_images:
        raise ValueError(f"heldout_images must be in (0, {n_images}), the cached images; got {heldout}")
    return run_aligned_experiment(
        aligned,
        np.arange(n_images - heldout),
        aligned,
        np.arange(n_images - heldout, n_images),
        config,
        seed,
        fields={
            "backbone": "+".join(aligned),
            "sae": "usae",
            "variant": config["train"].get("variant", "code"),
        },
        figures=(Path(config["figures_dir"]), "mini"),
    )
