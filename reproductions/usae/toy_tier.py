"""USAE toy tier: three synthetic "models" of :class:`~saebench.data.multimodel.MultiModelWorld` see planted
concepts (universal, shared by a pair, private) through different random maps. The USAE is trained by
:func:`~saebench.train.universal.train_universal_sae` (the authors' step: one model per batch) and scored on
held-out aligned rows by :mod:`saebench.metrics.universality`. Every planted concept is assigned to the USAE
latent whose atom in its first owner's dictionary has the largest cosine with the planted direction; the
firing entropy of that latent is the concept's measured FE.

Config (``configs/toy.yaml``)::

    world:      MultiModelWorldConfig fields (model_dims, n_universal, ...); the seed comes from the harness
    usae:       {n_latents, k}
    train:      UniversalTrainConfig fields (total_steps, warmup_steps, lr, final_lr, variant, loss, ...)
    batch_size: rows per aligned training batch
    eval_rows:  held-out rows the metrics are computed on
    threshold:  firing threshold tau (the paper's code: 0.1)
    independent: {k, train: TrainConfig fields} of the per-model TopK SAEs for the consistency metric
    torch_threads: CPU threads while the pipeline runs

Runs: one per model (``name: <model>``: self R^2, recovery MCC, dead fractions, consistency with an
independently trained TopK SAE and its random-normal baseline), one per concept group (``name: <group>``:
median and mean firing entropy, mean co-fire proportion) and one summary run (``name: usae``: mean diagonal
/ off-diagonal R^2, the co-fire vs energy correlation). Checks:
``r2-diagonal-dominates``, ``r2-off-diagonal-positive`` and ``consistency-beats-baseline``.
"""

from __future__ import annotations

from typing import Any

import torch

from saebench.data.multimodel import MultiModelWorld, MultiModelWorldConfig
from saebench.metrics.alignment import mcc
from saebench.metrics.universality import (
    cofire_counts,
    cofire_proportion,
    concept_energy,
    consistency_with_independent,
    cosine_curve_auc,
    cross_r2_matrix,
    dead_concept_fractions,
    fire_counts,
    firing_entropy,
    log_log_correlation,
    random_normal_like,
    training_r2_matrix,
)
from saebench.repro.pipeline import PipelineResult, Run
from saebench.sae import create_sae
from saebench.sae.universal import UniversalSAE, UniversalSAEConfig
from saebench.train import TrainConfig, train_sae
from saebench.train.universal import UniversalTrainConfig, train_universal_sae

from .checks import consistency_check, r2_checks


def _concept_latents(world: MultiModelWorld, usae: UniversalSAE) -> torch.Tensor:
    """``(n_concepts,)`` the latent whose atom in the concept's first owner has the largest cosine with it."""
    latents = torch.empty(world.n_concepts, dtype=torch.int64)
    with torch.no_grad():
        for c, owners in enumerate(world.owners):
            latents[c] = (usae.dictionary(owners[0]) @ world.true_atoms(owners[0])[c]).argmax()
    return latents


def _consistency(
    world: MultiModelWorld, usae: UniversalSAE, spec: dict[str, Any], batch_size: int, seed: int
) -> dict[str, dict[str, float]]:
    """Per model: train an independent TopK SAE on that model alone (same batches, same ``n_latents``) and
    compare its decoder atoms with the USAE dictionary (§4.4): the share of USAE concepts matched above 0.5,
    the curve's AUC, and the same AUC for the random-normal baseline in place of the USAE dictionary."""
    train = TrainConfig(**spec["train"], seed=seed, progress=False)
    out = {}
    for index, name in enumerate(world.models):
        torch.manual_seed(seed)
        sae = create_sae(
            "topk", d_in=world.config.model_dims[name], n_latents=usae.config.n_latents, k=spec["k"]
        )
        train_sae(sae, (b[name] for b in world.batches(batch_size, train.total_steps)), train)
        atoms = sae.W_dec.detach()
        match = consistency_with_independent(usae.dictionary(name), atoms)
        baseline = random_normal_like(atoms, torch.Generator().manual_seed(seed * 1000 + index)).float()
        out[name] = {
            "consistency_fraction": match.fraction_above_threshold,
            "consistency_auc": cosine_curve_auc(match),
            "consistency_baseline_auc": cosine_curve_auc(consistency_with_independent(baseline, atoms)),
        }
    return out


def run_toy(config: dict[str, Any], seed: int) -> PipelineResult:
    """The toy tier: train on the multi-model world, score on held-out rows (module docstring)."""
    world = MultiModelWorld(MultiModelWorldConfig(**config["world"], seed=seed))
    torch.manual_seed(seed)
    usae = UniversalSAE(UniversalSAEConfig(world.config.model_dims, **config["usae"]))
    train = UniversalTrainConfig(**config["train"])
    trained = train_universal_sae(usae, world.batches(config["batch_size"], train.total_steps), train)

    held_out = world.sample(config["eval_rows"])
    tau = config.get("threshold", 0.1)
    r2 = cross_r2_matrix(usae, held_out.x)
    usae.eval()
    with torch.no_grad():
        codes = {name: usae.encode(name, held_out.x[name])[1] for name in world.models}
    counts = torch.stack([fire_counts(codes[name], tau) for name in world.models])
    cofires = cofire_counts(list(codes.values()), tau)
    cfp = cofire_proportion(cofires, counts)
    fe = firing_entropy(counts)
    energy = sum(concept_energy(codes[name], usae.dictionary(name)) for name in world.models) / len(
        world.models
    )
    fit = log_log_correlation(cofires, energy)
    latents = _concept_latents(world, usae)

    consistency = _consistency(world, usae, config["independent"], config["batch_size"], seed)
    fields = {"backbone": "toy-world", "sae": "usae", "variant": train.variant}
    runs = []
    for index, name in enumerate(world.models):
        dead_before, dead_after = dead_concept_fractions(codes[name], tau)
        runs.append(
            Run(
                fields={**fields, "name": name},
                metrics={
                    "r2_self": r2[index, index].item(),
                    "mcc": mcc(usae.dictionary(name).detach(), world.maps[name]),
                    "dead_fraction": dead_before,
                    "dead_fraction_after_tau": dead_after,
                    **consistency[name],
                },
            )
        )
    for group, concepts in world.groups.items():
        group_fe, group_cfp = fe[latents[concepts]], cfp[:, latents[concepts]]
        runs.append(
            Run(
                fields={**fields, "name": group},
                metrics={
                    "firing_entropy_median": group_fe.median().item(),
                    "firing_entropy_mean": group_fe.mean().item(),
                    "cofire_proportion_mean": group_cfp.mean().item(),
                },
            )
        )
    off = ~torch.eye(len(r2), dtype=torch.bool)
    train_r2 = training_r2_matrix(trained.history[len(trained.history) // 2 :], world.models)
    runs.append(
        Run(
            fields={**fields, "name": "usae"},
            metrics={
                "r2_diagonal_mean": r2.diagonal().mean().item(),
                "r2_off_diagonal_mean": r2[off].mean().item(),
                "training_r2_off_diagonal_mean": train_r2[off].nanmean().item(),
                "cofire_energy_log_r": fit.r,
                "cofire_energy_log_slope": fit.slope,
            },
        )
    )
    return PipelineResult(runs=runs, checks=r2_checks(r2) | consistency_check(consistency), device="cpu")
