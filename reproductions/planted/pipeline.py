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
    torch_threads: CPU threads while the pipeline runs (the harness runner applies it; default: torch's)
    saes:       list of {name, architecture, n_latents, k (TopK) or l1_coefficient (ReLU), train: overrides}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from saebench.data.synthetic import PlantedWorld, PlantedWorldConfig
from saebench.evaluate import evaluate_sae
from saebench.repro.pipeline import CheckResult, PipelineResult, Run
from saebench.repro.sae_sweep import train_sae_specs

# The claim "TopK beats ReLU at matched L0" is only meaningful if ReLU spends at least TopK's budget of
# active latents; at most this many times that budget counts as matched.
MAX_L0_RATIO = 2.0


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
    return _train_and_evaluate(config, seed)


def _train_and_evaluate(config: dict[str, Any], seed: int) -> PipelineResult:
    device = config.get("device", "cpu")
    world = PlantedWorld(PlantedWorldConfig(**config["world"], seed=seed))
    members = train_sae_specs(
        config["saes"],
        lambda steps: world.batches(config["batch_size"], steps),
        world.d,
        config["train"],
        seed,
        device,
        backbone="planted",
    )
    held_out = world.sample(config["eval_rows"]).x
    runs = [
        Run(fields=m.fields, metrics=evaluate_sae(m.sae, [held_out], true_atoms=world.true_atoms))
        for m in members.values()
    ]
    by_name = {r.fields["name"]: r for r in runs}
    checks = {}
    if {"topk-world-k", "relu"} <= set(by_name):
        checks["relu-l0-matches-topk"] = _l0_matched_check(by_name["topk-world-k"], by_name["relu"])
    return PipelineResult(runs=runs, checks=checks, device=str(device))
