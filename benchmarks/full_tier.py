"""Wall-time estimates of the papers' full-tier training runs from measured step times (written only after a
GPU run: a CPU's step time says nothing about the GPU the full tier needs).

- MSAE (``papers/msae.md`` §4.1): ViT-L/14 embeddings (d = 768), 2,905,936 samples, batch 4096, 30 epochs at
  expansion 8 -> ``ceil(2,905,936 / 4096) * 30 = 21,300`` steps. Its last Matryoshka level is ReLU over all
  latents (dense), so a step costs at least a dense TopK step: ``hours = 21,300 * t(saebench-dense, x8) /
  3600``.
- USAE (``papers/usae.md`` §1.4): ``1,201,094`` steps of 6,272 token rows (32 images x 196 tokens), h = 6144,
  k = 32; each step encodes with one model and decodes into all three (sparse decodes, O(k d) each), so a step
  costs about one sparse TopK step at that batch: ``hours = 1,201,094 * t(saebench-sparse, x8, k=32) *
  6272 / 4096 / 3600`` (throughput taken as constant in the batch size).
"""

from __future__ import annotations

import math

MSAE_STEPS = math.ceil(2_905_936 / 4096) * 30
USAE_STEPS = 1_201_094
USAE_ROWS_PER_STEP = 32 * 196


def _seconds_per_sample(train: dict, implementation: str, expansion: int, k: int | None) -> float | None:
    for setting in train["settings"]:
        if setting["expansion"] == expansion and (k is None or setting["k"] == k):
            row = setting["results"][implementation]
            return 1.0 / row["samples_per_second"]
    return None


def full_tier_estimates(train: dict) -> dict:
    """Hours of the MSAE and USAE full-tier runs from a ``bench_train`` result (needs its x8 settings)."""
    msae = _seconds_per_sample(train, "saebench-dense", 8, None)
    usae = _seconds_per_sample(train, "saebench-sparse", 8, 32)
    estimates = {"device": train["machine"]["device_name"], "formulas": __doc__}
    if msae is not None:
        estimates["msae_hours"] = MSAE_STEPS * 4096 * msae / 3600
    if usae is not None:
        estimates["usae_hours"] = USAE_STEPS * USAE_ROWS_PER_STEP * usae / 3600
    return estimates
