"""MSAE reproduction (Zaigrajew et al. 2025, "Interpreting CLIP with Hierarchical Sparse Autoencoders").

Tiers: ``mini`` runs :func:`.mini_tier.run_mini` (real pooled embeddings from the mini-tier stores) and
``full`` :func:`.full_tier.run_full` (the authors' CLIP embedding memmaps); both share
:mod:`.embedding_sweep`. This module is the toy tier and the dispatch.

Toy tier: a planted world with parent/child features (:class:`~saebench.data.synthetic.HierarchyConfig`).
TopK, ReLU + L1 and Matryoshka SAEs (RW and UW weighting) of the same width are trained together from one
pass over the batches (:func:`~saebench.train.train_sweep`); each is scored on held-out rows by
:func:`~saebench.evaluate.evaluate_sae` (MCC against the planted atoms included) and by the authors'
progressive top-k evaluation (:func:`~saebench.metrics.msae.progressive_topk_sweep`: keep the ``k`` largest
of the ReLU "full" codes, score with MSAE's per-sample FVU), plus the full-output metrics of msae.md §3.4.

Toy config (``configs/toy.yaml``)::

    world:      PlantedWorldConfig fields (hierarchy included); the seed comes from the harness
    train:      TrainConfig fields shared by every SAE
    batch_size, eval_rows, torch_threads, device
    sweep_ks:   the k values of the progressive evaluation
    cknna_rows: held-out rows CKNNA is computed on
    probe:      ProbeTraining fields of the linear probe
    saes:       list of {name, architecture, n_latents, k (TopK) | l1_coefficient (ReLU) |
                k_levels + weighting (matryoshka), train: overrides}

Metrics added to each run (names are ours; msae.md gives the definitions):
``msae_fvu_at_k{k}`` (mean per-sample FVU of the top-k-of-full reconstruction), ``msae_fvu_full`` and
``msae_sparsity_full`` (the "all" output: ReLU of every pre-activation), ``msae_cs_full``,
``dead_count_full``, ``decoder_orthogonality``, ``parent_recovery`` / ``child_recovery`` (mean cosine of
each planted parent / child atom with its Hungarian-matched decoder row), ``cknna_input_codes`` and
``cknna_recon_input`` (CKNNA of input vs full codes and of full reconstruction vs input, on the first
``cknna_rows`` held-out rows), ``probe_kl_full`` / ``probe_agreement_full`` (a linear probe for the dominant
planted parent, trained on the first half of the held-out originals, read on the second half: originals vs
full-output reconstructions).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from saebench.data.synthetic import PlantedWorld, PlantedWorldConfig
from saebench.evaluate import evaluate_sae
from saebench.metrics.alignment import hungarian_alignment
from saebench.metrics.cknna import cknna
from saebench.metrics.msae import dead_latent_count, decoder_orthogonality, full_codes, progressive_topk_sweep
from saebench.metrics.probe_agreement import (
    ProbeTraining,
    probe_agreement,
    probe_inputs,
    probe_kl,
    train_linear_probe,
)
from saebench.metrics.reconstruction import cosine_similarity_mean, fvu_per_sample_mean
from saebench.metrics.sparsity import sparsity_fraction
from saebench.repro.pipeline import PipelineResult, Run
from saebench.repro.sae_sweep import train_sae_specs
from saebench.sae import SAE
from saebench.sae.matryoshka import MatryoshkaSAE

from .checks import graceful_check, truncation_check
from .full_tier import run_full
from .mini_tier import run_mini


def _hierarchy_recovery(world: PlantedWorld, sae: SAE) -> dict[str, float]:
    """Mean matched cosine of the planted parents and of the planted children (Hungarian over all atoms)."""
    h = world.config.hierarchy
    matched = hungarian_alignment(world.true_atoms, sae.W_dec.detach().cpu(), threshold=0.0).cosines
    return {
        "parent_recovery": float(matched[: h.n_parents].mean()),
        "child_recovery": float(matched[h.n_parents : h.n_parents + h.n_children].mean()),
    }


def _dominant_parent(world: PlantedWorld, codes: torch.Tensor) -> torch.Tensor:
    """``(n,)`` probe labels: the planted parent with the largest coefficient, ``n_parents`` if none."""
    parents = codes[:, : world.config.hierarchy.n_parents]
    return torch.where(parents.amax(dim=1) > 0, parents.argmax(dim=1), parents.shape[1])


def _train_probe(world: PlantedWorld, x: torch.Tensor, codes: torch.Tensor, options: ProbeTraining):
    """A linear probe for the dominant parent, trained on the first half of the rows (originals) with early
    stopping on the second half, as the authors' probe on ImageNet train / validation (msae.md §2.7)."""
    labels = _dominant_parent(world, codes)
    half = x.shape[0] // 2
    inputs = probe_inputs(x)
    n_classes = world.config.hierarchy.n_parents + 1
    return train_linear_probe(inputs[:half], labels[:half], inputs[half:], labels[half:], n_classes, options)


@torch.no_grad()
def _probe_metrics(probe: torch.nn.Linear, x: torch.Tensor, x_hat: torch.Tensor) -> dict[str, float]:
    """KL and argmax agreement of the probe on originals vs full-output reconstructions (second half)."""
    half = x.shape[0] // 2
    original, reconstructed = probe(probe_inputs(x[half:])), probe(probe_inputs(x_hat[half:]))
    return {
        "probe_kl_full": probe_kl(original, reconstructed)[0],
        "probe_agreement_full": probe_agreement(original, reconstructed),
    }


@torch.no_grad()
def _msae_metrics(
    sae: SAE, x: torch.Tensor, ks: list[int], cknna_rows: int
) -> tuple[dict[str, float], torch.Tensor]:
    """The MSAE metrics of one SAE on ``x``, and its full-output reconstruction."""
    sweep = progressive_topk_sweep(sae, x, [k for k in ks if k <= sae.n_latents])
    full = full_codes(sae, x)
    x_hat_full = sae.decode(full)
    rows = slice(0, cknna_rows)
    metrics = {f"msae_fvu_at_k{k}": values["fvu"][0] for k, values in sweep.items()}
    metrics.update(
        msae_fvu_full=fvu_per_sample_mean(x, x_hat_full),
        msae_cs_full=cosine_similarity_mean(x, x_hat_full),
        msae_sparsity_full=sparsity_fraction(full),
        dead_count_full=float(dead_latent_count(full)),
        decoder_orthogonality=decoder_orthogonality(sae.W_dec),
        cknna_input_codes=cknna(x[rows], full[rows]),
        cknna_recon_input=cknna(x_hat_full[rows], x[rows]),
    )
    return metrics, x_hat_full


def run(tier: str, config: dict[str, Any], seed: int, workdir: Path) -> PipelineResult:
    if tier == "full":
        return run_full(config, seed, Path(workdir))
    if tier == "mini":
        return run_mini(config, seed, Path(workdir))
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
        backbone="planted-hierarchy",
    )
    for member in members.values():
        if isinstance(member.sae, MatryoshkaSAE):  # its "k" is the first level's, the default inference k
            member.fields["k"] = member.sae.inference_k
    saes = {name: member.sae for name, member in members.items()}
    fields = {name: member.fields for name, member in members.items()}

    sample = world.sample(config["eval_rows"])
    held_out = sample.x.to(device)
    probe = _train_probe(world, held_out, sample.codes.to(device), ProbeTraining(**config["probe"]))
    ks = list(config["sweep_ks"])
    runs = []
    for name, sae in saes.items():
        metrics = evaluate_sae(sae, [held_out], true_atoms=world.true_atoms)
        msae_metrics, x_hat_full = _msae_metrics(sae, held_out, ks, config["cknna_rows"])
        metrics.update(msae_metrics)
        metrics.update(_probe_metrics(probe, held_out, x_hat_full))
        metrics.update(_hierarchy_recovery(world, sae))
        runs.append(Run(fields=fields[name], metrics=metrics))
    by_name = {r.fields["name"]: r for r in runs}
    checks = {}
    for msae_name in ("msae-rw", "msae-uw"):
        if msae_name in by_name:
            checks[f"{msae_name}-graceful"] = graceful_check(by_name[msae_name], ks)
        if {msae_name, "topk-large-k"} <= set(by_name):
            checks[f"{msae_name}-truncates-better"] = truncation_check(
                by_name[msae_name], by_name["topk-large-k"], ks
            )
    return PipelineResult(runs=runs, checks=checks, device=str(device))
