"""Learning-rate schedules: linear warm-up, then constant or cosine decay.

:func:`lr_multiplier` is the pure function (step -> factor of the base lr); :func:`build_scheduler` wraps it
in a ``torch.optim.lr_scheduler.LambdaLR``, so the schedule is an ordinary ``LRScheduler`` whose
``state_dict`` round-trips through checkpoints.

Conventions (``s`` is the 0-based index of the optimizer step about to run; LambdaLR evaluates ``s = 0``
at construction and ``s + 1`` after each ``scheduler.step()``):

- warm-up, ``s < W``: ``(s + 1) / W``. This is PatchSAE's ``constantwithwarmup`` LambdaLR
  (``min(1, (step + 1) / 500)``, see ``papers/patchsae.md`` §1.2), so the first step already uses ``lr / W``
  rather than a zero learning rate.
- constant, ``s >= W``: ``1``.
- cosine, ``s >= W``: ``r + (1 - r) * (1 + cos(pi * p)) / 2`` with ``p = (s - W) / (T - W)`` clipped to
  ``[0, 1]`` and ``r = min_lr_ratio``: 1 right after warm-up, ``r`` at ``s = T`` (the value after the last of
  ``T`` steps) and beyond. Same shape as overcomplete's ``CosineScheduler`` used by USAE
  (``papers/usae.md`` §1.4), which reaches its final value at ``total_iters``.
- linear_decay, ``s >= W``: ``1`` while ``s < int(0.8 T)``, then ``(T - s) / (0.2 T)``, 0 from ``s = T`` on.
  The MSAE authors' ``LinearDecayLR`` (``papers/msae.md`` §4.1) is this rule stepped once per **epoch**
  (``s`` = epoch, ``T`` = epochs); here it is stepped per optimizer step, the same line sampled finely.
"""

from __future__ import annotations

import functools
import math

import torch

from saebench.train.config import SCHEDULES, TrainConfig

__all__ = ["lr_multiplier", "build_scheduler", "LINEAR_DECAY_FRACTION"]

LINEAR_DECAY_FRACTION = 0.2  # the last 20% of training decays to 0 (MSAE LinearDecayLR, msae.md §4.1)


def lr_multiplier(
    step: int,
    *,
    total_steps: int,
    warmup_steps: int = 0,
    schedule: str = "constant",
    min_lr_ratio: float = 0.0,
) -> float:
    """Factor of the base lr used by optimizer step ``step`` (0-based); see the module docstring."""
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; choose one of {SCHEDULES}")
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    if schedule == "linear_decay":
        if step < int((1.0 - LINEAR_DECAY_FRACTION) * total_steps):
            return 1.0
        return max(0.0, (total_steps - step) / (LINEAR_DECAY_FRACTION * total_steps))
    decay_steps = total_steps - warmup_steps
    progress = 1.0 if decay_steps <= 0 else min(1.0, (step - warmup_steps) / decay_steps)
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(
    optimizer: torch.optim.Optimizer, config: TrainConfig
) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` applying :func:`lr_multiplier` with the config's warm-up, schedule and length."""
    multiplier = functools.partial(
        lr_multiplier,
        total_steps=config.total_steps,
        warmup_steps=config.warmup_steps,
        schedule=config.schedule,
        min_lr_ratio=config.min_lr_ratio,
    )
    return torch.optim.lr_scheduler.LambdaLR(optimizer, multiplier)
