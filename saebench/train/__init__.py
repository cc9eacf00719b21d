"""saebench.train: the SAE trainer (schedules, AMP, dead latents, checkpoint/resume, data parallel, sweeps).

Start with :func:`train_sae` and :class:`TrainConfig`; ``docs/training.md`` describes every option.
"""

from saebench.train.config import TrainConfig
from saebench.train.sweep import train_sweep
from saebench.train.trainer import (
    NonFiniteTrainingError,
    SAEStep,
    Trainer,
    TrainResult,
    train_sae,
)

__all__ = [
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "SAEStep",
    "NonFiniteTrainingError",
    "train_sae",
    "train_sweep",
]
