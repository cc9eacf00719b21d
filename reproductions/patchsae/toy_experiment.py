"""PatchSAE toy tier: a ReLU SAE on every token of a patch world, its patch maps, and top-k latent masking.

1. Train ``relu`` SAEs with the authors' recipe pieces (ghost grads with the 64-step dead window, warm-up) on
   all tokens (CLS + patches) of :class:`~saebench.data.patch_world.PatchWorld` images (stream 0), one per
   entry of ``saes``: the loss as the code computes it or as the paper writes it, and the decoder bias at the
   image-level (authors') or plain geometric median.
2. Localisation (paper §3.2, Figs. 2c, 4): for each planted concept, pick the latent whose segmentation masks
   best match the concept's rectangles on calibration images (stream 1), then score that latent's masks on
   held-out images (stream 2) by IoU. The whole-image mask (all an image-level SAE can say) is the baseline.
3. Masking (paper §4.1, Fig. 5b) on single-concept images (labelled by their concept): class statistics
   ``a_c`` from stream 3, accuracy on stream 4 of a read-out that sums each concept direction's projection
   over the patch tokens, with the tokens replaced by masked reconstructions.

Runs: one per SAE, ``name`` from its entry (SAE metrics, ``mean_iou`` / ``min_iou`` of the matched latents,
masking accuracies ``acc_<row>`` for the rows of :func:`~saebench.metrics.latent_masking.masking_sweep`), and
``name: whole-image`` (``mean_iou`` of the all-patches mask).

Config (``configs/toy.yaml``)::

    world:            PatchWorldConfig fields (the seed comes from the harness)
    images:           {train, calibration, eval, masking_stats, masking_eval}: images per stream
    expansion:        latents per token dimension
    saes:             list of {name, reconstruction ("code" | "paper"), l1_coefficient,
                      b_dec_init (saebench.train.patchsae_loss.DECODER_BIAS_INITS)}
    images_per_step:  images per training batch (all their tokens go in)
    train:            TrainConfig overrides of the authors' recipe (total_steps, lr, warmup_steps, ...)
    masking_ks:       k values of the masking sweep
    torch_threads:    CPU threads while the pipeline runs
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import torch

from saebench.data.patch_world import PatchWorld, PatchWorldConfig, PatchWorldSample
from saebench.metrics.latent_masking import masking_sweep, mean_reconstruction_offset
from saebench.metrics.patch_maps import mask_iou, patch_activation_maps, segmentation_masks
from saebench.metrics.patch_stats import (
    class_latent_statistics,
    dead_latents_in_window,
    window_frequency_per_image,
    window_frequency_per_token,
)
from saebench.metrics.reconstruction import explained_variance_uncentered
from saebench.metrics.sparsity import l0_count
from saebench.repro.pipeline import Run
from saebench.sae import create_sae
from saebench.sae.base import SAE
from saebench.train import train_sae
from saebench.train.patchsae_loss import (
    init_decoder_bias_from_images,
    patchsae_loss,
    patchsae_train_config,
    token_norm_normalized_mse,
)

__all__ = ["run_toy"]

STREAMS = {"train": 0, "calibration": 1, "eval": 2, "masking_stats": 3, "masking_eval": 4}


def _batches(tokens: torch.Tensor, images_per_step: int, seed: int) -> Iterator[torch.Tensor]:
    """Endless shuffled epochs of ``(images_per_step, T, d)`` batches."""
    generator = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(tokens.shape[0], generator=generator)
        for start in range(0, len(order) - images_per_step + 1, images_per_step):
            yield tokens[order[start : start + images_per_step]]


def _train(config: dict[str, Any], spec: dict[str, Any], train: PatchWorldSample, seed: int) -> SAE:
    torch.manual_seed(seed)
    _, n_tokens, d = train.tokens.shape
    sae = create_sae("relu", d_in=d, n_latents=config["expansion"] * d)
    per_step = config["images_per_step"]
    init_decoder_bias_from_images(sae, train.tokens[:per_step], spec["b_dec_init"])
    train_config = patchsae_train_config(
        tokens_per_image=n_tokens, images_per_step=per_step, progress=False, seed=seed, **config["train"]
    )
    loss = patchsae_loss(spec["l1_coefficient"], spec["reconstruction"])
    train_sae(sae, _batches(train.tokens, per_step, seed), train_config, loss)
    return sae.eval()


def _concept_ious(world: PatchWorld, codes_cal, calibration, codes_eval, held_out) -> torch.Tensor:
    """``(n_concepts,)`` held-out IoU of the latent that best localises each concept on calibration images."""
    all_latents = range(codes_cal.shape[2])
    calibration_masks = segmentation_masks(patch_activation_maps(codes_cal, world.layout, all_latents))
    ious = []
    for concept in range(world.config.n_concepts):
        on_cal = calibration.present[:, concept]
        truth = calibration.masks[on_cal, concept].unsqueeze(1).expand_as(calibration_masks[on_cal])
        best = int(mask_iou(calibration_masks[on_cal], truth).mean(dim=0).argmax())
        on_eval = held_out.present[:, concept]
        predicted = segmentation_masks(patch_activation_maps(codes_eval[on_eval], world.layout, [best]))[:, 0]
        ious.append(mask_iou(predicted, held_out.masks[on_eval, concept]).mean())
    return torch.stack(ious)


def _masking_accuracies(
    config: dict[str, Any], world: PatchWorld, sae: SAE, offset: float
) -> dict[str, float]:
    single = PatchWorld(dataclasses.replace(world.config, concepts_per_image=1))
    stats_images = single.sample(config["images"]["masking_stats"], STREAMS["masking_stats"])
    eval_images = single.sample(config["images"]["masking_eval"], STREAMS["masking_eval"])
    n_classes = world.config.n_concepts
    with torch.no_grad():
        stats = class_latent_statistics(sae.encode(stats_images.tokens), stats_images.labels, n_classes)

    def concept_readout(tokens: torch.Tensor) -> torch.Tensor:
        return (tokens[:, 1:] @ single.concept_directions.T).sum(dim=1)

    labels = {(sae.n_latents if k == "all" else int(k)): str(k) for k in config["masking_ks"]}
    rows = masking_sweep(
        sae, eval_images.tokens, eval_images.labels, stats, list(labels), concept_readout, offset
    )
    accuracies = {"acc_no_sae": rows.pop("no_sae").macro}
    for name, row in rows.items():
        mode, k = name.split("_")
        accuracies[f"acc_{mode}_{labels[int(k)]}"] = row.macro
    return accuracies


def _sae_run(
    config: dict[str, Any], spec: dict[str, Any], world: PatchWorld, samples: dict, seed: int
) -> Run:
    train, calibration, held_out = samples["train"], samples["calibration"], samples["eval"]
    sae = _train(config, spec, train, seed)
    with torch.no_grad():
        codes_cal = sae.encode(calibration.tokens)
        out = sae(held_out.tokens)
    ious = _concept_ious(world, codes_cal, calibration, out.codes, held_out)
    offset = mean_reconstruction_offset(sae, train.tokens)
    metrics = {
        "l0": l0_count(out.codes),
        "explained_variance": explained_variance_uncentered(held_out.tokens, out.x_hat),
        "normalized_mse_code": float(token_norm_normalized_mse(held_out.tokens, out.x_hat)),
        "dead_fraction": float(dead_latents_in_window(window_frequency_per_token(out.codes)).double().mean()),
        "dead_fraction_logged": float(
            dead_latents_in_window(window_frequency_per_image(out.codes)).double().mean()
        ),
        "mean_iou": float(ious.mean()),
        "min_iou": float(ious.min()),
        "reconstruction_offset": offset,
        **_masking_accuracies(config, world, sae, offset),
    }
    fields = {
        "name": spec["name"],
        "sae": "relu",
        "backbone": "patch-world",
        "reconstruction": spec["reconstruction"],
        "b_dec_init": spec["b_dec_init"],
    }
    return Run(fields=fields, metrics=metrics)


def run_toy(config: dict[str, Any], seed: int) -> list[Run]:
    world = PatchWorld(PatchWorldConfig(**config["world"], seed=seed))
    samples = {
        name: world.sample(config["images"][name], STREAMS[name]) for name in ("train", "calibration", "eval")
    }
    runs = [_sae_run(config, spec, world, samples, seed) for spec in config["saes"]]
    held_out = samples["eval"]
    whole_image = torch.ones_like(held_out.masks)
    baseline_iou = mask_iou(whole_image[held_out.present], held_out.masks[held_out.present]).mean()
    runs.append(
        Run(fields={"name": "whole-image", "backbone": "patch-world"}, metrics={"mean_iou": baseline_iou})
    )
    return runs
