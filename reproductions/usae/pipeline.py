"""USAE reproduction (Thasarathan et al. 2025): train a Universal SAE on aligned activations of three models
and compute the universality metrics of the paper (``papers/usae.md`` §2).

- toy: three synthetic "models" with planted universal / shared / private concepts (:mod:`.toy_tier`);
- mini: EfficientNet-Lite0, the zoo CNN and the zoo ViT on the same Fashion-MNIST images (:mod:`.mini_tier`);
- full: SigLIP ViT-B/16, DINOv2 ViT-S/14 and ViT-B/16 on ImageNet (:mod:`.full_tier`).

The mini and full tiers share :mod:`.aligned_experiment` (training, streaming metrics, independent SAEs,
figures); every tier's named checks are in :mod:`.checks`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from saebench.repro.pipeline import PipelineResult

from .full_tier import run_full
from .mini_tier import run_mini
from .toy_tier import run_toy


def run(tier: str, config: dict[str, Any], seed: int, workdir: Path) -> PipelineResult:
    if tier == "mini":
        return run_mini(config, seed)
    if tier == "full":
        return run_full(config, seed, workdir)
    return run_toy(config, seed)
