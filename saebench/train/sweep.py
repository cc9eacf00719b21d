"""Sweeps: several SAEs (different k, L1 coefficient, expansion, seed...) trained from one pass over the data.

Each global batch is drawn once and handed to every SAE's :class:`~saebench.train.trainer.Trainer` in
turn; each SAE keeps its own optimizer, schedule, dead-latent tracker, log and checkpoints, so a member ends
with the same weights as training it alone on the same batches (as long as its steps draw no random numbers:
the members share the global RNG stream, seeded once with the first member's ``seed``).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

from saebench.sae.base import SAE
from saebench.train.config import TrainConfig
from saebench.train.trainer import Batch, LossFn, StepFn, Trainer, TrainResult, run_trainers

__all__ = ["train_sweep", "member_config"]

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.=-]*$")


def member_config(config: TrainConfig, name: str) -> TrainConfig:
    """A shared config specialised for member ``name``: checkpoints go to ``<checkpoint_dir>/<name>`` and the
    log to ``<log stem>.<name><log suffix>`` (e.g. ``train.jsonl`` -> ``train.k8.jsonl``)."""
    changes = {}
    if config.checkpoint_dir is not None:
        changes["checkpoint_dir"] = str(Path(config.checkpoint_dir) / name)
    if config.log_path is not None:
        log = Path(config.log_path)
        changes["log_path"] = str(log.with_name(f"{log.stem}.{name}{log.suffix}"))
    return dataclasses.replace(config, **changes)


def _per_member(value, names: list[str], what: str):
    """``value`` as a ``{name: value}`` dict: a mapping must name every member, anything else is shared."""
    if isinstance(value, Mapping):
        missing, extra = sorted(set(names) - set(value)), sorted(set(value) - set(names))
        if missing or extra:
            raise ValueError(f"{what} must give one entry per SAE: missing {missing}, unknown {extra}")
        return dict(value)
    return {name: value for name in names}


def train_sweep(
    saes: Mapping[str, SAE],
    batches: Iterable[Batch],
    configs: TrainConfig | Mapping[str, TrainConfig],
    loss_fns: LossFn | Mapping[str, LossFn] | None = None,
    step_fns: StepFn | Mapping[str, StepFn] | None = None,
) -> dict[str, TrainResult]:
    """Train every SAE of ``saes`` (``{name: sae}``) on one pass over ``batches``.

    ``configs``, ``loss_fns`` and ``step_fns`` are either one value shared by all members or a
    ``{name: value}`` mapping. A shared config's ``checkpoint_dir`` / ``log_path`` are split per member with
    :func:`member_config`; per-member configs must not share a checkpoint folder or log file. Each member
    trains for its own ``total_steps``; the pass ends when every member is done or the batches run out.
    Returns ``{name: TrainResult}``.
    """
    names = list(saes)
    if not names:
        raise ValueError("train_sweep needs at least one SAE")
    bad = [name for name in names if not _SAFE_NAME.match(name)]
    if bad:
        raise ValueError(f"sweep member names {bad} must be letters, digits and _ . = - (they name files)")
    if isinstance(configs, TrainConfig):
        member_configs = {name: member_config(configs, name) for name in names}
    else:
        member_configs = _per_member(configs, names, "configs")
    for attribute in ("checkpoint_dir", "log_path"):
        used = [getattr(c, attribute) for c in member_configs.values() if getattr(c, attribute) is not None]
        if len(used) != len(set(used)):
            raise ValueError(f"sweep members must not share a {attribute}; got {used}")
    member_losses = _per_member(loss_fns, names, "loss_fns")
    member_steps = _per_member(step_fns, names, "step_fns")
    trainers = {
        name: Trainer(
            saes[name], member_configs[name], loss_fn=member_losses[name], step_fn=member_steps[name]
        )
        for name in names
    }
    run_trainers(list(trainers.values()), batches)
    return {name: trainer.result() for name, trainer in trainers.items()}
