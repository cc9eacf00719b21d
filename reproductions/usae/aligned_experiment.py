"""The USAE experiment on cached activations of real models (mini and full tiers; paper §4).

Given an aligned group of stores to train on and one to evaluate on (row ``t`` of image ``n`` is the same
image token in every model), :func:`run_aligned_experiment`:

1. fits each model's scalar standardisation on random training images (usae.md §1.5);
2. trains the USAE with the authors' step on batches of whole images (:mod:`.aligned_data`);
3. streams the held-out images through :class:`~saebench.metrics.universality_stream.UniversalityAccumulator`
   (R^2 and MSE matrices both ways, firing at ``tau``, co-firing, energy, dead concepts; §2.1);
4. trains one TopK SAE per model on that model alone (same images, ``n_latents`` and ``k``) and compares its
   atoms with the USAE dictionary (§4.4: Hungarian cosine, share above 0.5, the random-normal baseline, AUC);
5. draws the figures (:mod:`saebench.viz.usae_plots`) when a figure folder is given.

Config keys (``configs/mini.yaml``, ``configs/full.yaml``)::

    usae:                 {n_latents, k}
    train:                UniversalTrainConfig fields
    images_per_batch:     training images per step (the authors: 32)
    standardize_images:   images the standardisation statistics are taken on (the authors: 1,000)
    eval_images_per_batch: held-out images per metric batch (the authors' analysis: 100)
    threshold:            firing threshold tau (0.1)
    top_concepts:         N of the top-N summaries (the paper: 1,000)
    min_cofires:          co-fire floor of the second co-fire/energy fit (the paper's right panel: 1,000)
    high_entropy:         firing entropy at or above which a concept counts as universal-like
    independent:          {train: TrainConfig fields} of the per-model TopK SAEs
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from saebench.acts.store import AlignedStores
from saebench.metrics.reconstruction import r2_global_mean
from saebench.metrics.universality import (
    consistency_with_independent,
    cosine_curve_auc,
    energy_ranking,
    log_log_correlation,
    random_normal_like,
    training_r2_matrix,
)
from saebench.metrics.universality_stream import UniversalityAccumulator, UniversalityReport
from saebench.repro.pipeline import PipelineResult, Run
from saebench.sae import create_sae
from saebench.sae.base import SAE
from saebench.sae.universal import UniversalSAE, UniversalSAEConfig
from saebench.train import TrainConfig, train_sae
from saebench.train.universal import UniversalTrainConfig, train_universal_sae
from saebench.viz.usae_plots import (
    plot_cofire_proportion_by_rank,
    plot_firing_entropy_histogram,
    plot_r2_matrix,
)

from .aligned_data import Stats, ordered_batches, standardization_stats, training_batches
from .cam_figure import aligned_feature_fns, save_cam_figure, universal_concepts
from .checks import consistency_check, r2_checks

__all__ = ["run_aligned_experiment"]


def _on(batches: Iterable[Mapping[str, torch.Tensor]], device: str) -> Iterator[dict[str, torch.Tensor]]:
    for batch in batches:
        yield {name: x.to(device) for name, x in batch.items()}


def _independent_sae(
    store: AlignedStores,
    images: np.ndarray,
    stats: Stats,
    config: dict[str, Any],
    n_latents: int,
    k: int,
    seed: int,
    device: str,
) -> SAE:
    """A TopK SAE trained on one model's standardised tokens alone (the paper's independent SAE, §4.4;
    its training is unstated, so the USAE's ``n_latents``, ``k``, images and batches are used)."""
    (name,) = store
    train = TrainConfig(**config["independent"]["train"], seed=seed, progress=False)
    torch.manual_seed(seed)
    sae = create_sae("topk", d_in=store[name].d, n_latents=n_latents, k=k).to(device)
    batches = training_batches(store, images, config["images_per_batch"], train.total_steps, stats, seed)
    train_sae(sae, (batch[name] for batch in batches), train)
    return sae.eval()


@torch.no_grad()
def _batch_averaged_r2(sae: SAE, batches: Iterable[torch.Tensor]) -> float:
    values = [r2_global_mean(x.cpu(), sae(x).x_hat.cpu()) for x in batches]
    return sum(values) / len(values)


def _consistency(
    usae: UniversalSAE, saes: Mapping[str, SAE], report: UniversalityReport, top: int, seed: int
) -> dict[str, dict[str, float]]:
    """Per model (§4.4): USAE atoms matched to the independent SAE's by Hungarian cosine (USAE = reference):
    share above 0.5, the curve's AUC, its random-normal baseline's AUC, and the mean matched cosine over the
    ``top`` concepts with the most co-fires (Fig. 16)."""
    most_cofiring = energy_ranking(report.cofires.double())[:top]
    out = {}
    for index, (name, sae) in enumerate(saes.items()):
        atoms = sae.W_dec.detach().cpu().double()
        dictionary = usae.dictionary(name).detach().cpu().double()
        match = consistency_with_independent(dictionary, atoms)
        per_concept = torch.zeros(usae.config.n_latents, dtype=torch.float64)
        per_concept[match.rows] = match.cosines.double()
        baseline = random_normal_like(atoms, torch.Generator().manual_seed(seed * 1000 + index))
        out[name] = {
            "consistency_fraction": match.fraction_above_threshold,
            "consistency_auc": cosine_curve_auc(match),
            "consistency_baseline_auc": cosine_curve_auc(consistency_with_independent(baseline, atoms)),
            f"consistency_mean_cosine_top{top}": float(per_concept[most_cofiring].mean()),
        }
    return out


def _figures(report: UniversalityReport, folder: Path, suffix: str) -> None:
    models = list(report.models)
    plot_r2_matrix(
        report.r2,
        models,
        folder / f"usae_r2_matrix_{suffix}.png",
        title=f"USAE cross-model R² ({suffix}, held out)",
    )
    live = report.fires.sum(dim=0) > 0
    plot_firing_entropy_histogram(
        report.firing_entropy[live],
        folder / f"usae_firing_entropy_{suffix}.png",
        n_models=len(models),
        title=f"firing entropy of the {int(live.sum())} concepts that fire ({suffix})",
    )
    order = energy_ranking(report.energy_aggregate)[: int(live.sum())]
    plot_cofire_proportion_by_rank(
        report.cofire_proportion,
        order,
        models,
        folder / f"usae_cofire_by_rank_{suffix}.png",
        title=f"co-fire proportion by energy rank ({suffix})",
    )


def run_aligned_experiment(
    train: AlignedStores,
    train_images: np.ndarray,
    heldout: AlignedStores,
    heldout_images: np.ndarray,
    config: dict[str, Any],
    seed: int,
    *,
    fields: Mapping[str, str | int | float | bool],
    figures: tuple[Path, str] | None = None,
    device: str = "cpu",
) -> PipelineResult:
    """Train and evaluate (module docstring). ``train_images`` / ``heldout_images``: image positions in each
    group's order. ``fields``: selector fields every run carries (``backbone``, ``sae``, ...). ``figures``:
    ``(folder, suffix)`` of the PNGs, or None.

    Runs: one per model (``name: <model>``) and one summary (``name: usae``); checks
    ``r2-diagonal-dominates``, ``r2-off-diagonal-positive`` (eval mode, held out) and
    ``consistency-beats-baseline``."""
    if list(train) != list(heldout):
        raise ValueError(
            f"train and held-out groups must hold the same models, got {list(train)} / {list(heldout)}"
        )
    models = list(train)
    stats = standardization_stats(train, train_images, config["standardize_images"], seed)
    torch.manual_seed(seed)
    usae = UniversalSAE(UniversalSAEConfig({n: train[n].d for n in models}, **config["usae"])).to(device)
    schedule = UniversalTrainConfig(**config["train"])
    per_batch = config["images_per_batch"]
    batches = training_batches(train, train_images, per_batch, schedule.total_steps, stats, seed)
    trained = train_universal_sae(usae, _on(batches, device), schedule)

    tau = config.get("threshold", 0.1)
    accumulator = UniversalityAccumulator(usae, tau)
    eval_batch = config["eval_images_per_batch"]
    for batch in _on(ordered_batches(heldout, heldout_images, eval_batch, stats), device):
        accumulator.update(batch)
    report = accumulator.report()

    n_latents, k = usae.config.n_latents, usae.config.k
    saes = {
        name: _independent_sae(
            AlignedStores({name: train[name]}), train_images, stats, config, n_latents, k, seed, device
        )
        for name in models
    }
    top = config["top_concepts"]
    consistency = _consistency(usae, saes, report, top, seed)
    if figures is not None:
        _figures(report, *figures)
        if "cam" in config:  # CAM on the stores' own backbones (the mini tier: they load offline)
            folder, suffix = figures
            concepts = universal_concepts(report, config["cam"]["concepts"])
            if concepts:
                save_cam_figure(
                    usae.cpu(),
                    aligned_feature_fns(train, stats),
                    concepts,
                    Path(folder) / f"usae_cam_{suffix}.png",
                    steps=config["cam"]["steps"],
                    seed=seed,
                )
    return PipelineResult(
        runs=_runs(
            report, trained.history, consistency, saes, heldout, heldout_images, stats, config, fields, device
        ),
        checks=r2_checks(report.r2) | consistency_check(consistency),
        device=device,
    )


def _cofire_energy_fits(cofires: torch.Tensor, energy: torch.Tensor, min_cofires: int) -> dict[str, float]:
    """Fig. 6c: log10 co-fires vs log10 energy over every concept that co-fires (r and slope) and over those
    with at least ``min_cofires`` co-fires (r). A fit with fewer than 2 concepts does not exist and is left
    out (its claims then report the metric as missing)."""
    fits = {}
    if int(((cofires > 0) & (energy > 0)).sum()) >= 2:
        fit = log_log_correlation(cofires, energy)
        fits |= {"cofire_energy_log_r": fit.r, "cofire_energy_log_slope": fit.slope}
    if int(((cofires >= min_cofires) & (energy > 0)).sum()) >= 2:
        fits[f"cofire_energy_log_r_min{min_cofires}"] = log_log_correlation(cofires, energy, min_cofires).r
    return fits


def _runs(
    report: UniversalityReport,
    history: list[dict[str, float | str]],
    consistency: dict[str, dict[str, float]],
    saes: Mapping[str, SAE],
    heldout: AlignedStores,
    heldout_images: np.ndarray,
    stats: Stats,
    config: dict[str, Any],
    fields: Mapping[str, str | int | float | bool],
    device: str,
) -> list[Run]:
    models, top = list(report.models), config["top_concepts"]
    by_energy = energy_ranking(report.energy_aggregate)[:top]
    cfp = report.cofire_proportion
    runs = []
    for a, name in enumerate(models):
        independent = _batch_averaged_r2(
            saes[name],
            (
                b[name]
                for b in _on(
                    ordered_batches(
                        AlignedStores({name: heldout[name]}),
                        heldout_images,
                        config["eval_images_per_batch"],
                        stats,
                    ),
                    device,
                )
            ),
        )
        fired = report.fires[a] > 0
        runs.append(
            Run(
                fields={**fields, "name": name},
                metrics={
                    "r2_self": report.r2[a, a].item(),
                    "r2_self_per_dimension": report.r2_per_dimension[a, a].item(),
                    "mse_self": report.mse[a, a].item(),
                    "dead_fraction": report.dead_fraction[a].item(),
                    "dead_fraction_after_tau": report.dead_fraction_after_threshold[a].item(),
                    f"cofire_proportion_top{top}": cfp[a, by_energy].mean().item(),
                    "cofire_proportion_mean": cfp[a, fired].mean().item() if fired.any() else 0.0,
                    "independent_r2_self": independent,
                    "standardize_mean": stats[name][0],
                    "standardize_std": stats[name][1],
                    **consistency[name],
                },
            )
        )
    off = ~torch.eye(len(models), dtype=torch.bool)
    live = report.fires.sum(dim=0) > 0
    entropy = report.firing_entropy[live]
    energy = report.energy_aggregate / len(models)
    train_r2 = training_r2_matrix(history[len(history) // 2 :], models)
    summary = {
        "r2_diagonal_mean": report.r2.diagonal().mean().item(),
        "r2_off_diagonal_mean": report.r2[off].mean().item(),
        "r2_off_diagonal_min": report.r2[off].min().item(),
        "r2_per_dimension_off_diagonal_mean": report.r2_per_dimension[off].mean().item(),
        "training_r2_diagonal_mean": train_r2.diagonal().nanmean().item(),
        "training_r2_off_diagonal_mean": train_r2[off].nanmean().item(),
        "live_concept_fraction": live.double().mean().item(),
        "firing_entropy_median": entropy.median().item(),
        # over all concepts, as the paper's histogram counts them (a dead concept has FE 0)
        "firing_entropy_high_fraction": (report.firing_entropy >= config["high_entropy"])
        .double()
        .mean()
        .item(),
        "consistency_baseline_auc": sum(v["consistency_baseline_auc"] for v in consistency.values())
        / len(models),
        "eval_rows": report.n_rows,
        **_cofire_energy_fits(report.cofires, energy, config["min_cofires"]),
    }
    summary |= {
        f"r2[{i}->{j}]": report.r2[a, b].item() for a, i in enumerate(models) for b, j in enumerate(models)
    }
    summary |= {
        f"training_r2[{i}->{j}]": train_r2[a, b].item()
        for a, i in enumerate(models)
        for b, j in enumerate(models)
    }
    runs.append(Run(fields={**fields, "name": "usae"}, metrics=summary))
    return runs
