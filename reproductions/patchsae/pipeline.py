"""PatchSAE (Lim et al., ICLR 2025, "Sparse autoencoders reveal selective remapping of visual concepts during
adaptation"): reproduction pipeline.

- toy: :mod:`.toy_experiment` (patch world: localisation IoU against planted masks, top-k latent masking);
- mini: :mod:`.mini` (the zoo ViT on Fashion-MNIST, prompt-tuned adaptation and remapping);
- full: :mod:`.full_tier` (the Table 2 SAEs on CLIP and the ImageNet masking baseline; skipped without the
  weights, data and GPU of ``configs/full.yaml``). Table 1's MaPLe part is not implemented (NOTES.md).

Every tier also returns the check ``table1-delta``: Table 1's improvement rates follow from its own accuracy
columns (:mod:`.table1`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from saebench.repro.pipeline import PipelineResult

from .table1 import table1_delta_check
from .toy_experiment import run_toy


def run(tier: str, config: dict[str, Any], seed: int, workdir: Path) -> PipelineResult:
    if tier == "toy":
        result = PipelineResult(runs=run_toy(config, seed), device="cpu")
    elif tier == "mini":
        from .mini import run_mini

        result = run_mini(config, seed, workdir)
    else:
        from .full_tier import run_full  # imports open_clip: only when the full tier runs

        result = run_full(config, seed, workdir)
    checks = {**result.checks, "table1-delta": table1_delta_check()}
    return dataclasses.replace(result, checks=checks)
