"""Build and train the SAEs a reproduction config lists under ``saes:``, all from one pass over the data.

A spec is ``{name, architecture, <architecture config fields>, l1_coefficient? (relu), l0_coefficient?
(jumprelu), train?: {TrainConfig overrides}}``; ``d_in`` comes from the data. Every scalar config field
becomes a run field (what claims select on and what the leaderboard shows), beside ``name``, ``sae`` and
``backbone``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch

from saebench.sae import SAE, create_sae
from saebench.train import TrainConfig, train_sweep
from saebench.train.losses import LossFn, default_loss, jumprelu_l0_loss, relu_l1_loss

__all__ = ["SweepMember", "build_sae_from_spec", "train_sae_specs"]

LOSS_KEYS = ("l1_coefficient", "l0_coefficient")
NOT_CONFIG_KEYS = ("name", "architecture", "train", *LOSS_KEYS)


@dataclass
class SweepMember:
    """One trained (or to-be-trained) SAE of a sweep, its loss and its run fields."""

    sae: SAE
    loss: LossFn
    fields: dict[str, Any]


def _loss_for(spec: dict[str, Any], sae: SAE) -> LossFn:
    if spec["architecture"] == "relu" and "l1_coefficient" in spec:
        return relu_l1_loss(spec["l1_coefficient"])
    if spec["architecture"] == "jumprelu" and "l0_coefficient" in spec:
        return jumprelu_l0_loss(spec["l0_coefficient"])
    return default_loss(sae)


def build_sae_from_spec(spec: dict[str, Any], d: int, device: str, backbone: str) -> SweepMember:
    """The SAE (on ``device``), its loss and its run fields for one ``saes`` entry of width ``d``."""
    config = {
        key: tuple(value) if isinstance(value, list) else value
        for key, value in spec.items()
        if key not in NOT_CONFIG_KEYS
    }
    sae = create_sae(spec["architecture"], d_in=d, **config).to(device)
    scalars = {key: value for key, value in config.items() if isinstance(value, int | float | str | bool)}
    losses = {key: spec[key] for key in LOSS_KEYS if key in spec}
    fields = {"name": spec["name"], "sae": spec["architecture"], "backbone": backbone, **scalars, **losses}
    return SweepMember(sae=sae, loss=_loss_for(spec, sae), fields=fields)


def train_sae_specs(
    specs: list[dict[str, Any]],
    batches: Callable[[int], Iterable[torch.Tensor]],
    d: int,
    train: dict[str, Any],
    seed: int,
    device: str = "cpu",
    backbone: str = "planted",
) -> dict[str, SweepMember]:
    """Build every spec and train them together with :func:`saebench.train.train_sweep`.

    ``batches(n_steps)`` returns the stream (one batch per step); ``train`` holds the shared
    :class:`TrainConfig` fields, which each spec's ``train`` entry overrides. Returns members by name.
    """
    torch.manual_seed(seed)
    members = {spec["name"]: build_sae_from_spec(spec, d, device, backbone) for spec in specs}
    base = TrainConfig(**train, seed=seed, progress=False)
    configs = {spec["name"]: dataclasses.replace(base, **spec.get("train", {})) for spec in specs}
    steps = max(config.total_steps for config in configs.values())
    train_sweep(
        {name: m.sae for name, m in members.items()},
        batches(steps),
        configs,
        loss_fns={name: m.loss for name, m in members.items()},
    )
    return members
