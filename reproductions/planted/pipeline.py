"""The planted-world demo reproduction: train a few SAEs on a world whose dictionary we know, and report.

The smallest complete pipeline (see NOTES.md): it composes library calls only —
:class:`~saebench.data.synthetic.PlantedWorld` for data, :func:`~saebench.sae.create_sae` for the SAEs,
:func:`~saebench.train.train_sweep` to train them all from one pass over the batches, and
:func:`~saebench.evaluate.evaluate_sae` for the metrics (with MCC against the planted atoms) — and returns
one :class:`~saebench.repro.pipeline.Run` per SAE plus the named check its claims use.

Config (``configs/<tier>.yaml``)::

    world:      PlantedWorldConfig fields (d, n_atoms, k, noise_std, ...); the seed comes from the harness
    train:      TrainConfig fields shared by every SAE (total_steps, lr, schedule, ...)
    batch_size: rows per training batch
    eval_rows:  held-out rows the metrics are computed on
    device:     torch device for training and evaluation (default cpu)
    torch_threads: CPU threads while the pipeline runs (default: leave torch's setting)
    saes:       list of {name, architecture, n_latents, k (TopK) or l1_coefficient (ReLU), train: overrides}
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from saebench.data.synthetic import PlantedWorld, PlantedWorldConfig
from saebench.evaluate import evaluate_sae
from saebench.repro.pipeline import CheckResult, PipelineResult, Run
from saebench.sae import SAE, create_sae
from saebench.train import TrainConfig, train_sweep
from saebench.train.losses import default_loss, relu_l1_loss

# The claim "TopK beats ReLU at matched L0" is only meaningful if ReLU spends at least TopK's budget of
# active latents; at most this many times that budget counts as matched.
MAX_L0_RATIO = 2.0


def _build_sae(spec: dict[str, Any], d: int, device: str) -> tuple[SAE, Any, dict[str, Any]]:
    """The SAE, its loss and its run fields for one ``saes`` entry."""
    architecture, n_latents = spec["architecture"], spec["n_latents"]
    fields: dict[str, Any] = {
        "name": spec["name"],
        "sae": architecture,
        "backbone": "planted",
        "n_latents": n_latents,
    }
    if architecture == "relu":
        sae = create_sae("relu", d_in=d, n_latents=n_latents)
        loss = relu_l1_loss(spec["l1_coefficient"])
        fields["l1_coefficient"] = spec["l1_coefficient"]
    else:
        sae = create_sae(architecture, d_in=d, n_latents=n_latents, k=spec["k"])
        loss = default_loss(sae)
        fields["k"] = spec["k"]
    return sae.to(device), loss, fields


def _l0_matched_check(topk: Run, relu: Run) -> CheckResult:
    """ReLU spends between 1x and MAX_L0_RATIO x the active latents of the TopK SAE."""
    ratio = relu.metrics["l0"] / topk.metrics["l0"]
    passed = 1.0 <= ratio <= MAX_L0_RATIO
    detail = (
        f"ReLU L0 {relu.metrics['l0']:.3g} / TopK (k={topk.fields['k']}) L0 {topk.metrics['l0']:.3g} "
        f"= {ratio:.3g}, {'inside' if passed else 'outside'} [1, {MAX_L0_RATIO:g}]"
    )
    return CheckResult(passed=passed, detail=detail)


def run(tier: str, config: dict[str, Any], seed: int, workdir: Path) -> PipelineResult:
    threads = torch.get_num_threads()
    torch.set_num_threads(config.get("torch_threads", threads))
    try:
        return _train_and_evaluate(config, seed)
    finally:
        torch.set_num_threads(threads)


def _train_and_evaluate(config: dict[str, Any], seed: int) -> PipelineResult:
    device = config.get("device", "cpu")
    world = PlantedWorld(PlantedWorldConfig(**config["world"], seed=seed))
    torch.manual_seed(seed)
    saes, losses, fields = {}, {}, {}
    for spec in config["saes"]:
        saes[spec["name"]], losses[spec["name"]], fields[spec["name"]] = _build_sae(spec, world.d, device)
    base = TrainConfig(**config["train"], seed=seed, progress=False)
    train_configs = {
        spec["name"]: dataclasses.replace(base, **spec.get("train", {})) for spec in config["saes"]
    }
    steps = max(c.total_steps for c in train_configs.values())
    train_sweep(saes, world.batches(config["batch_size"], steps), train_configs, loss_fns=losses)

    held_out = world.sample(config["eval_rows"]).x
    runs = [
        Run(fields=fields[name], metrics=evaluate_sae(sae, [held_out], true_atoms=world.true_atoms))
        for name, sae in saes.items()
    ]
    by_name = {r.fields["name"]: r for r in runs}
    checks = {}
    if {"topk-world-k", "relu"} <= set(by_name):
        checks["relu-l0-matches-topk"] = _l0_matched_check(by_name["topk-world-k"], by_name["relu"])
    return PipelineResult(runs=runs, checks=checks, device=str(device))
