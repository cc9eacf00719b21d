"""Equivariant SAEs (Erdogan & Lucic, arXiv:2511.09432): reproduction pipeline.

``experiment: shapes`` (the mini tier) runs :mod:`.shapes_experiment`, ``experiment: galaxy`` (the full
tier) :mod:`.galaxy_experiment`; otherwise (the toy tier) the orbit toy model below.

Toy tier (the orbit toy model, :mod:`saebench.data.orbits`): fit the group action ``M`` on held-out orbits
(:func:`~saebench.sae.equivariant.fit_group_action`), then train vanilla nonlinear-encoder TopK SAEs
(``topk_mlp``) on the orbit members as separate rows and equivariant SAEs (``equivariant``, each loss type) on
orbit batches, all from the same world. Runs and their metrics:

* ``name: group-action``: ``m_r2_min`` / ``m_r2_mean``, the R² of ``M^p`` over the powers ``p = 1..G-1``;
* one run per SAE: ``fvu`` (:func:`~saebench.metrics.fvu_dataset` over every orbit member of held-out
  orbits; equivariant SAEs reconstruct member ``p`` as ``M^p D(z)``,
  :func:`~saebench.sae.equivariant.reconstruct_orbits`), ``l0``, ``mcc_members`` (decoder rows against
  all ``G * n_atoms`` orbit-member atoms) and ``mcc_orbits`` (against the ``n_atoms`` representatives).

Config (``configs/<tier>.yaml``)::

    world:          OrbitWorldConfig fields (world: PlantedWorldConfig fields; group_order); seed: harness
    group_action:   {fit_rows, epochs, lr, all_powers}: the fit of M (README --M-epochs, --M-train-on-all-k)
    batch_size:     orbits per training batch (vanilla SAEs see batch_size * G rows)
    eval_orbits:    held-out orbits for the metrics
    torch_threads:  CPU threads while the pipeline runs
    train:          TrainConfig fields shared by every SAE
    saes:           list of {name, architecture (topk_mlp | equivariant), n_latents, k, encoder_hidden,
                    loss_type (equivariant only), lambda_mse (equivariant only)}
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from saebench.data.orbits import OrbitWorld, OrbitWorldConfig
from saebench.metrics import fvu_dataset, mcc
from saebench.repro.pipeline import PipelineResult, Run
from saebench.sae import create_sae
from saebench.sae.equivariant import fit_group_action, group_action_r2, orbit_step, reconstruct_orbits
from saebench.train import TrainConfig, train_sae

from .galaxy_experiment import run_galaxy
from .shapes_experiment import run_shapes


def run(tier: str, config: dict[str, Any], seed: int, workdir: Path) -> PipelineResult:
    experiment = config.get("experiment", "orbit_toy")
    if experiment == "shapes":
        return PipelineResult(runs=run_shapes(config, seed, Path(workdir)))
    if experiment == "galaxy":
        return PipelineResult(runs=run_galaxy(config, seed, Path(workdir)))
    return _toy(config, seed)


def _group_action_run(world: OrbitWorld, spec: dict[str, Any], eval_orbits: torch.Tensor, seed: int):
    fit_orbits = world.sample_orbits(spec["fit_rows"], stream=1)
    matrix = fit_group_action(
        fit_orbits, epochs=spec["epochs"], lr=spec["lr"], all_powers=spec["all_powers"], seed=seed
    )
    r2 = group_action_r2(matrix, eval_orbits)
    fields = {"name": "group-action", "backbone": "orbit-toy"}
    return matrix, Run(fields=fields, metrics={"m_r2_min": float(r2.min()), "m_r2_mean": float(r2.mean())})


def _sae_run(spec, world, matrix, eval_orbits, train_config) -> Run:
    options = {"d_in": world.d, "n_latents": spec["n_latents"], "k": spec["k"]}
    options["encoder_hidden"] = spec.get("encoder_hidden", 128)
    if spec["architecture"] == "equivariant":
        options["loss_type"] = spec["loss_type"]
        options["lambda_mse"] = spec.get("lambda_mse", 0.0)
    sae = create_sae(spec["architecture"], **options)
    n_batches = train_config.total_steps
    if spec["architecture"] == "equivariant":
        sae.set_group_action(matrix)
        train_sae(sae, world.orbit_batches(spec["batch_size"], n_batches), train_config, step_fn=orbit_step)
        with torch.no_grad():
            recon = reconstruct_orbits(sae, eval_orbits)
            codes = sae.encode(eval_orbits)
    else:
        train_sae(sae, world.member_batches(spec["batch_size"], n_batches), train_config)
        with torch.no_grad():
            out = sae(eval_orbits)
            recon, codes = out.x_hat, out.codes
    atoms = sae.W_dec.detach()
    metrics = {
        "fvu": fvu_dataset(eval_orbits.reshape(-1, world.d), recon.reshape(-1, world.d)),
        "l0": float((codes != 0).sum(dim=-1).float().mean()),
        "mcc_members": mcc(atoms, world.true_atoms),
        "mcc_orbits": mcc(atoms, world.orbit_atoms),
    }
    fields = {
        "name": spec["name"],
        "sae": spec["architecture"],
        "n_latents": spec["n_latents"],
        "k": spec["k"],
    }
    fields["loss_type"] = spec.get("loss_type", "mse")
    return Run(fields=fields, metrics=metrics)


def _toy(config: dict[str, Any], seed: int) -> PipelineResult:
    world = OrbitWorld(OrbitWorldConfig(**config["world"], seed=seed))
    eval_orbits = world.sample_orbits(config["eval_orbits"])
    matrix, m_run = _group_action_run(world, config["group_action"], eval_orbits, seed)
    base = TrainConfig(**config["train"], seed=seed, progress=False)
    runs = [m_run]
    for spec in config["saes"]:
        torch.manual_seed(seed)
        train_config = dataclasses.replace(base, **spec.get("train", {}))
        spec = {**spec, "batch_size": config["batch_size"]}
        runs.append(_sae_run(spec, world, matrix, eval_orbits, train_config))
    return PipelineResult(runs=runs, device="cpu")
