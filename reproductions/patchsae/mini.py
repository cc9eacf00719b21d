"""PatchSAE mini tier: the paper's experiments on the zoo ViT and Fashion-MNIST, on a CPU in minutes.

What runs (``configs/mini.yaml``; choices and reductions are in NOTES.md, "Mini tier"):

1. **PatchSAE** (patchsae.md §1): a ReLU SAE, expansion 64 (64 -> 4096 latents), on every token (CLS + 7×7
   patches) of the zoo ViT's residual stream after its last block, read from the mini-tier store
   ``zoo-vit/block.-1/all`` (12,000 training images). The authors' recipe
   (:func:`~saebench.train.patchsae_loss.patchsae_train_config`: Adam, warm-up then constant, ghost grads
   with the 64-step window, unit-norm decoder rows; the normalised MSE + L1 of
   :func:`~saebench.train.patchsae_loss.patchsae_loss`; their Kaiming-uniform encoder init), each step a
   fresh batch of whole images, with far fewer steps than the paper and so a larger lr and L1 coefficient
   (both in the config). Scored on the test split (``fvu_dataset``, ``l0``, ``dead_fraction``, ...).
2. **Top-k latent masking** (§2.5, Fig. 5b): each class's top-k latents by ``a_c[s]`` (Eq. 5) on the
   training images; every test image's tokens are replaced by the reconstruction of its true class's masked
   codes and classified by the ViT's own final norm + head. The head reads the class token only, so
   splicing the CLS reconstruction equals splicing every token at this hook (the last block's output).
3. **Selective remapping** (§2.6, Table 1): the same SAE encodes the frozen ViT and its prompt-adapted
   variant (:mod:`saebench.zoo.prompted`, trained with the run's seed on the base half of the classes in a
   low-contrast domain, the downstream shift, :func:`~saebench.zoo.prompted.in_domain`) on the test images
   in that domain; per
   class, the groups "high", "high->low", "low->high" of ``a_c`` (:func:`~saebench.metrics.remapping.
   remapping_groups`), averaged over the base and the novel classes, and the improvement rate Δ.
4. **Patch heatmaps** (§3.2, Fig. 2c, 4): the top latents of one test image per class over the image, as
   ``patchsae_heatmaps_mini.png`` in the work folder and in ``figures_dir``; and a viewer bundle
   (:func:`saebench.viewer.bundle.write_viewer_bundle`) of the test images in ``<workdir>/viewer``.

Runs (fields -> metrics): ``experiment: training`` (the SAE's metrics); ``experiment: masking`` with
``mask: none`` (the ViT alone) or ``on``/``off`` and ``k`` (``accuracy_macro``, ``accuracy_micro``,
``retention`` = macro accuracy / the ViT's); ``experiment: remapping`` with ``split: base|novel`` (group
sizes, ``remapped_share`` = (high->low + low->high) / (those + high), ``low_to_high_share`` = low->high /
(low->high + high): the share of a class's top latents after adaptation that were low before, both models'
accuracies in percent on the split, ``delta``, and ``dataset_stat_correlation`` between ``a_D`` before and
after, Fig. 20).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from saebench.acts.backbones.core import Backbone
from saebench.acts.loaders import ByImageLoader
from saebench.acts.sources.fashion_mnist import CLASS_NAMES
from saebench.acts.tokens import TokenLayout
from saebench.evaluate import evaluate_sae
from saebench.metrics.latent_masking import (
    ClassificationAccuracy,
    class_top_latents,
    classification_accuracy,
    masked_classification_accuracy,
    mean_reconstruction_offset,
)
from saebench.metrics.patch_maps import patch_activation_maps
from saebench.metrics.patch_stats import (
    class_latent_statistics,
    image_level_activation,
    latent_frequency,
)
from saebench.metrics.remapping import RemappingGroups, improvement_rate, remapping_groups
from saebench.repro.pipeline import PipelineResult, ReproductionError, Run
from saebench.repro.tiers import requirement_paths
from saebench.sae import create_sae
from saebench.sae.base import SAE
from saebench.sae.init import kaiming_uniform_encoder_
from saebench.train import train_sae
from saebench.train.patchsae_loss import (
    init_decoder_bias_from_images,
    patchsae_loss,
    patchsae_train_config,
)
from saebench.viewer.bundle import write_viewer_bundle
from saebench.zoo.data import LabelledImages, load_fashion_mnist, normalize_pixels
from saebench.zoo.mini_caches import open_mini_tier
from saebench.zoo.prompted import (
    PROMPTED_VIT,
    TrainedPrompts,
    ensure_prompted,
    in_domain,
    prompted_backbone,
    split_accuracy,
)
from saebench.zoo.registry import ENTRIES, backbone_of, ensure_trained
from saebench.zoo.train import torch_threads

__all__ = ["run_mini", "HEATMAP_FIGURE"]

HEATMAP_FIGURE = "patchsae_heatmaps_mini.png"
HOOK = "block.-1"
ENCODE_IMAGES = 200
"""Images encoded at a time: 200 × 52 tokens × 4096 latents of float32 codes is 170 MB."""


def run_mini(config: dict[str, Any], seed: int, workdir: Path) -> PipelineResult:
    """The mini tier (module docstring) with ``seed`` for the SAE and the prompts."""
    with torch_threads(int(config.get("torch_threads", 1))):
        train_tokens, train_labels = _training_tokens(config)
        sae = _train_patchsae(train_tokens, config, seed)
        frozen = backbone_of(ensure_trained(ENTRIES["zoo-vit"]))
        prompted = ensure_prompted(PROMPTED_VIT.with_seed(seed))
        test = load_fashion_mnist("test", int(config["eval_images"]))
        test_tokens = _residual_tokens(frozen, test)
        stat_rows = _first_per_class(train_labels, int(config["masking"]["stat_images_per_class"]))
        train_stats = _class_stats(sae, train_tokens[stat_rows], train_labels[stat_rows])
        masking = _masking_runs(sae, frozen, train_tokens, test_tokens, test.labels, train_stats, config)
        remapping = _remapping_runs(sae, frozen, prompted, test, config["remapping"])
        heatmaps = _heatmap_figure(sae, test, test_tokens, config["heatmaps"])
        _save_figure(heatmaps, [workdir, Path(config["figures_dir"])])
        n_viewer = int(config["viewer_images"])
        _write_viewer(sae, _first(test, n_viewer), test_tokens[:n_viewer], workdir / "viewer")
    runs = [_sae_run(sae, test_tokens), *masking, *remapping]
    return PipelineResult(runs=runs)


# ------------------------------------------------------------------------------------------ data
def _training_tokens(config: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(n_images, 50, 64)`` float32 tokens and ``(n_images,)`` labels of the mini-tier store, which must
    come from the zoo ViT this run uses (its config hash is in the manifest)."""
    manifest = requirement_paths(config)["mini_manifest"]
    tier = open_mini_tier(manifest.parent, plan=json.loads(manifest.read_text())["plan"])
    zoo = tier.manifest["zoo"].get("zoo-vit", {})
    expected = ENTRIES["zoo-vit"].config_hash()
    if zoo.get("config_hash") != expected:
        raise ReproductionError(
            f"{manifest}: its zoo-vit stores come from config {zoo.get('config_hash')}, not the current "
            f"zoo-vit ({expected}); re-run `saebench cache-mini`"
        )
    store = tier.store(config["store"])
    batch = next(iter(ByImageLoader(store, store.n_images)))
    return batch.acts, batch.label


def _first_per_class(labels: torch.Tensor, per_class: int) -> torch.Tensor:
    """Row indices of the first ``per_class`` rows of each class, class by class."""
    return torch.cat([(labels == c).nonzero().flatten()[:per_class] for c in range(len(CLASS_NAMES))])


def _first(images: LabelledImages, n: int) -> LabelledImages:
    return LabelledImages(images.pixels[:n], images.labels[:n], {**images.fingerprint, "first_n": n})


def _pixels_to_inputs(pixels: torch.Tensor) -> torch.Tensor:
    """``(B, 28, 28)`` uint8 -> the backbones' ``(B, 3, 28, 28)`` input (grey copied to three channels)."""
    return normalize_pixels(pixels).expand(-1, 3, -1, -1)


def _residual_tokens(backbone: Backbone, images: LabelledImages, chunk: int = 1000) -> torch.Tensor:
    """``(n, T, d)``: the backbone's residual stream after its last block on ``images``."""
    parts = [backbone.extract(_pixels_to_inputs(p), [HOOK])[HOOK].clone() for p in images.pixels.split(chunk)]
    return torch.cat(parts)


def _codes(sae: SAE, tokens: torch.Tensor) -> Iterator[torch.Tensor]:
    """The codes ``(b, T, h)`` of ``tokens`` ``(n, T, d)``, :data:`ENCODE_IMAGES` images at a time."""
    with torch.no_grad():
        for chunk in tokens.split(ENCODE_IMAGES):
            yield sae.encode(chunk)


def _class_stats(sae: SAE, tokens: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``(10, h)`` ``a_c[s]`` (Eq. 5, tau = 0.2) summed over chunks (the statistic is additive)."""
    stats = torch.zeros(len(CLASS_NAMES), sae.n_latents, dtype=torch.int64)
    for codes, chunk_labels in zip(_codes(sae, tokens), labels.split(ENCODE_IMAGES), strict=True):
        stats += class_latent_statistics(codes, chunk_labels, len(CLASS_NAMES))
    return stats


# ------------------------------------------------------------------------------------------ the SAE
def _image_batches(tokens: torch.Tensor, images_per_step: int, seed: int) -> Iterator[torch.Tensor]:
    """Endless ``(images_per_step * T, d)`` batches: whole images, reshuffled every pass."""
    generator = torch.Generator().manual_seed(seed)
    while True:
        for index in torch.randperm(len(tokens), generator=generator).split(images_per_step):
            if len(index) == images_per_step:
                yield tokens[index].reshape(-1, tokens.shape[2])


def _train_patchsae(tokens: torch.Tensor, config: dict[str, Any], seed: int) -> SAE:
    """The PatchSAE trained on ``tokens`` ``(n, T, d)`` (in eval mode)."""
    spec, train = config["sae"], config["train"]
    torch.manual_seed(seed)
    n_images, n_tokens, d = tokens.shape
    sae = create_sae("relu", d_in=d, n_latents=spec["expansion"] * d)
    kaiming_uniform_encoder_(sae)  # the authors' encoder init (NOTES.md)
    images_per_step = int(train["images_per_step"])
    first = tokens[torch.randperm(n_images, generator=torch.Generator().manual_seed(seed))[:images_per_step]]
    with torch.no_grad():
        init_decoder_bias_from_images(sae, first, spec["b_dec_init"])
    recipe = patchsae_train_config(
        int(train["total_steps"]),
        images_per_step,
        n_tokens,
        warmup_steps=int(train["warmup_steps"]),
        lr=float(train["lr"]),
        seed=seed,
        progress=False,
    )
    loss = patchsae_loss(float(spec["l1_coefficient"]), spec["reconstruction"])
    train_sae(sae, _image_batches(tokens, images_per_step, seed), recipe, loss_fn=loss)
    return sae.eval()


def _sae_run(sae: SAE, tokens: torch.Tensor) -> Run:
    """The SAE's metrics on every test token (:func:`~saebench.evaluate.evaluate_sae`: ``fvu_dataset``,
    ``l0`` per token as Table 2's L0, ``dead_fraction``, the code's ``mse_normalized_by_input_norm`` as
    Table 2's MSE, ``explained_variance_uncentered`` as the code logs it)."""
    rows = (chunk.reshape(-1, tokens.shape[2]) for chunk in tokens.split(ENCODE_IMAGES))
    metrics = {k: v for k, v in evaluate_sae(sae, rows).items() if isinstance(v, (int, float))}
    return Run({"experiment": "training", "sae": "relu", "backbone": "zoo-vit"}, metrics)


# ------------------------------------------------------------------------------------------ masking
def _vit_head(backbone: Backbone) -> Callable[[torch.Tensor], torch.Tensor]:
    """``tokens (b, T, d) -> logits (b, 10)``: the ViT after the hooked layer (final norm, head on CLS)."""
    model = backbone.model
    return lambda tokens: model.head(model.norm(tokens[:, 0]))


def _masking_runs(
    sae: SAE,
    frozen: Backbone,
    train_tokens: torch.Tensor,
    test_tokens: torch.Tensor,
    labels: torch.Tensor,
    train_stats: torch.Tensor,
    config: dict[str, Any],
) -> list[Run]:
    """The authors' ``metrics.csv`` rows as runs: the ViT alone, then ``on``/``off`` for each k."""
    spec = config["masking"]
    classify = _vit_head(frozen)
    offset = mean_reconstruction_offset(sae, train_tokens[: spec["offset_images"]]) if spec["offset"] else 0.0
    cls_tokens = test_tokens[:, :1]  # the head reads the CLS only (module docstring)
    with torch.no_grad():
        original = classification_accuracy(classify(cls_tokens), labels, len(CLASS_NAMES))
    runs = [_masking_run("none", 0, original, original)]
    for k in spec["ks"]:
        top = class_top_latents(train_stats, min(int(k), sae.n_latents))
        for mode in ("on", "off"):
            accuracy = masked_classification_accuracy(sae, cls_tokens, labels, top, classify, mode, offset)
            runs.append(_masking_run(mode, int(k), accuracy, original))
    return runs


def _masking_run(
    mode: str, k: int, accuracy: ClassificationAccuracy, original: ClassificationAccuracy
) -> Run:
    metrics = {
        "accuracy_macro": accuracy.macro,
        "accuracy_micro": accuracy.micro,
        "retention": accuracy.macro / original.macro,
    }
    return Run({"experiment": "masking", "mask": mode, "k": k}, metrics)


# ------------------------------------------------------------------------------------------ remapping
def _remapping_runs(
    sae: SAE,
    frozen: Backbone,
    prompted: TrainedPrompts,
    test: LabelledImages,
    spec: dict[str, Any],
) -> list[Run]:
    """Groups per class between the frozen and the adapted ViT on the test images in the adaptation's domain
    (all their tokens: CLS, patches and, for the adapted one, its prompt tokens, as the authors' code counts
    them), per split, with both models' accuracies on that domain."""
    entry = prompted.entry
    test = in_domain(test, entry.domain)
    before = _class_stats(sae, _residual_tokens(frozen, test), test.labels)
    after = _class_stats(sae, _residual_tokens(prompted_backbone(prompted), test), test.labels)
    groups = remapping_groups(before, after, int(spec["high_rank"]), int(spec["low_rank"]))
    correlation = torch.corrcoef(torch.stack([before.sum(0), after.sum(0)]).double())[0, 1].item()
    runs = []
    for split, classes in (("base", entry.base_classes), ("novel", entry.novel_classes)):
        rows = torch.tensor(classes)
        counts = RemappingGroups(*(mask[rows] for mask in groups)).mean_counts()
        zero_shot = 100.0 * split_accuracy(frozen.model, test, classes)
        adapted = 100.0 * split_accuracy(prompted.model, test, classes)
        moved = counts["high_to_low"] + counts["low_to_high"]
        metrics = {
            **counts,
            "remapped_share": moved / (moved + counts["high"]),
            "low_to_high_share": counts["low_to_high"] / (counts["low_to_high"] + counts["high"]),
            "frozen_accuracy": zero_shot,
            "adapted_accuracy": adapted,
            "delta": improvement_rate(adapted, zero_shot),
            "dataset_stat_correlation": correlation,
        }
        runs.append(Run({"experiment": "remapping", "split": split}, metrics))
    return runs


# ------------------------------------------------------------------------------------------ figures
def _heatmap_figure(sae: SAE, test: LabelledImages, tokens: torch.Tensor, spec: dict[str, Any]) -> Figure:
    """One row per class (its first test image): the image, then its ``n_latents`` strongest latents' patch
    maps (nearest-neighbour upsampled, as the authors' demo) over it. Latents firing on more than
    ``max_frequency`` of the test images (bias-like, the demo's "noisy" latents) are skipped."""
    n_latents = int(spec["n_latents"])
    frequent = _image_frequency(sae, tokens) > float(spec["max_frequency"])
    layout = TokenLayout(n_cls=1, grid=(7, 7))
    rows = [int((test.labels == c).nonzero()[0]) for c in range(len(CLASS_NAMES))]
    figure = Figure(figsize=(1.4 * (n_latents + 1), 1.45 * len(rows)))
    axes = figure.subplots(len(rows), n_latents + 1)
    for row, index in zip(axes, rows, strict=True):
        with torch.no_grad():
            codes = sae.encode(tokens[index : index + 1])
        strength = image_level_activation(codes)[0].masked_fill(frequent, -1.0)
        latents = strength.topk(n_latents).indices.tolist()
        maps = patch_activation_maps(codes, layout, latents)[0]
        upsampled = F.interpolate(maps[:, None], size=(28, 28), mode="nearest")[:, 0]
        row[0].imshow(test.pixels[index], cmap="gray")
        row[0].set_title(CLASS_NAMES[int(test.labels[index])], fontsize=7)
        for ax, latent, heat in zip(row[1:], latents, upsampled, strict=True):
            ax.imshow(test.pixels[index], cmap="gray")
            ax.imshow(heat, cmap="inferno", alpha=0.6, vmin=0.0)
            ax.set_title(f"#{latent} ({float(strength[latent]):.2f})", fontsize=6)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    figure.suptitle("PatchSAE mini: top latents' patch maps (zoo ViT, Fashion-MNIST test)", fontsize=8)
    figure.tight_layout()
    return figure


def _image_frequency(sae: SAE, tokens: torch.Tensor) -> torch.Tensor:
    """``(h,)``: :func:`~saebench.metrics.patch_stats.latent_frequency` over all images, chunk by chunk."""
    chunks = [(latent_frequency(image_level_activation(c)), len(c)) for c in _codes(sae, tokens)]
    return sum(frequency * n for frequency, n in chunks) / len(tokens)


def _save_figure(figure: Figure, folders: list[Path]) -> None:
    """The PNG, without matplotlib's ``Software`` metadata (same bytes for the same figure)."""
    FigureCanvasAgg(figure)
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
        figure.savefig(folder / HEATMAP_FIGURE, dpi=110, metadata={"Software": None})


def _write_viewer(sae: SAE, test: LabelledImages, tokens: torch.Tensor, folder: Path) -> None:
    """A viewer bundle of the test images (``saebench view <workdir>/viewer``); replaces an older one."""
    if folder.exists():
        shutil.rmtree(folder)
    write_viewer_bundle(
        folder,
        test.pixels.numpy(),
        _codes(sae, tokens),
        TokenLayout(n_cls=1, grid=(7, 7)),
        labels=test.labels.numpy(),
        class_names=list(CLASS_NAMES),
        title="PatchSAE mini: zoo ViT block.-1 (CLS + 7x7), Fashion-MNIST test",
    )
