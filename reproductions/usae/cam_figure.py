"""The coordinated activation maximisation (CAM) figure of a trained USAE on real backbones (usae.md §3.3,
Eq. 7-8; paper §4.5).

:func:`saebench.viz.cam.coordinated_activation_maximization` optimises one image per model for a concept
``k``; it needs, per model, a differentiable map from an image in ``[0, 1]`` to the standardised tokens the
USAE was trained on. :func:`backbone_feature_fn` builds that map so that it sees what the cached stores saw
(``docs/mini-tier.md``): Fashion-MNIST is grey, and each backbone's preprocessing copies the grey image to
RGB, resizes it to the backbone's input size (PIL bilinear with antialiasing; here ``F.interpolate`` with
``antialias=True``) and normalises it with the backbone's mean and std; the hook's tokens are selected as the
store selected them (``"patches"``: the ViT's class token is dropped) and standardised with the model's scalar
``(mean, std)`` (usae.md §1.5). One image of ``image_size`` pixels is optimised per model and resized to each
backbone's input, so the phase has the same size for every model.

The objective is the mean over tokens of the concept's pre-activation (:mod:`saebench.viz.cam`). The figure
shows the grey image each model sees: one row per concept, one column per model, each panel titled with its
objective.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from saebench.acts.backbones.core import Backbone
from saebench.acts.backbones.preprocessing import Preprocessing
from saebench.acts.backbones.registry import load_backbone
from saebench.acts.store import AlignedStores, canonical_json
from saebench.acts.tokens import select_tokens
from saebench.data.multimodel import scalar_standardize
from saebench.metrics.universality import energy_ranking
from saebench.metrics.universality_stream import UniversalityReport
from saebench.sae.universal import UniversalSAE
from saebench.viz.cam import FeatureFn, concept_activation, coordinated_activation_maximization
from saebench.zoo.mini_caches import channels_last

from .aligned_data import Stats

__all__ = [
    "LUMA_WEIGHTS",
    "grey",
    "backbone_inputs",
    "backbone_feature_fn",
    "aligned_feature_fns",
    "universal_concepts",
    "cam_images",
    "cam_grid_figure",
    "save_cam_figure",
]

LUMA_WEIGHTS = (0.299, 0.587, 0.114)
"""ITU-R 601-2 luma, PIL's ``convert("L")``: how a colour image becomes the grey image Fashion-MNIST is."""

_INTERPOLATIONS = ("bilinear", "bicubic", "nearest")


def grey(images: torch.Tensor) -> torch.Tensor:
    """``(B, 3, H, W) -> (B, 3, H, W)``: the luma of each pixel copied to the three channels (PIL's grey to
    RGB, as every mini-tier backbone saw Fashion-MNIST)."""
    luma = torch.einsum("bchw,c->bhw", images, images.new_tensor(LUMA_WEIGHTS))
    return luma.unsqueeze(1).expand(-1, 3, -1, -1)


def backbone_inputs(images: torch.Tensor, preprocessing: Preprocessing) -> torch.Tensor:
    """``(B, 3, H, W)`` images in ``[0, 1]`` -> the backbone's normalised input ``(B, 3, h, w)``,
    differentiably: grey, resize to ``preprocessing.output_size`` (antialiased, as PIL resizes),
    ``(x - mean) / std``. On a grey image this is ``preprocessing.transform()`` without its rounding to 8-bit
    pixels."""
    if preprocessing.interpolation not in _INTERPOLATIONS:
        raise ValueError(
            f"preprocessing resizes with {preprocessing.interpolation!r}, which F.interpolate lacks; "
            f"CAM handles {_INTERPOLATIONS}"
        )
    pixels = grey(images)
    if tuple(pixels.shape[-2:]) != preprocessing.output_size:
        pixels = F.interpolate(
            pixels,
            size=preprocessing.output_size,
            mode=preprocessing.interpolation,
            antialias=preprocessing.interpolation != "nearest",
        )
    mean = pixels.new_tensor(preprocessing.mean).reshape(1, 3, 1, 1)
    std = pixels.new_tensor(preprocessing.std).reshape(1, 3, 1, 1)
    return (pixels - mean) / std


def backbone_feature_fn(
    backbone: Backbone, hook: str, selection: str, stats: tuple[float, float]
) -> FeatureFn:
    """The CAM feature map of one model: image ``(1, 3, H, W)`` in ``[0, 1]`` -> :func:`backbone_inputs` ->
    ``backbone.extract(differentiable=True)[hook]`` -> the ``selection`` tokens ``(T, d)`` (the store's token
    selection) -> scalar standardisation with ``stats = (mean, std)``.

    Lays the backbone's convolutions out channels-last, in place
    (:func:`~saebench.zoo.mini_caches.channels_last`), as the mini-tier stores were cached, so the features
    optimised are computed exactly as the stored ones. (Input gradients are correct in either layout:
    ``Backbone.extract`` gives a feature map's gradient the map's own layout.)"""
    channels_last(backbone)
    layout = backbone.resolve_hook(hook).layout
    backbone_inputs(torch.zeros(1, 3, 1, 1), backbone.preprocessing)  # refuse an unsupported resize now

    def features(image: torch.Tensor) -> torch.Tensor:
        inputs = backbone_inputs(image, backbone.preprocessing)
        acts = backbone.extract(inputs, [hook], differentiable=True)[hook]
        return scalar_standardize(select_tokens(acts, layout, selection)[0], *stats)

    return features


def aligned_feature_fns(aligned: AlignedStores, stats: Stats) -> dict[str, FeatureFn]:
    """``{model: feature_fn}`` for the models of an aligned group, each backbone loaded with its pretrained
    (or cached zoo) weights and checked against the fingerprint its store recorded, so the CAM runs on the
    very model, hook and token selection the USAE was trained on."""
    fns = {}
    for name, store in aligned.items():
        recorded = store.spec["backbone"]
        backbone = load_backbone(recorded["backbone"], pretrained=True)
        hook = store.spec["hook"]
        if _comparable(backbone.fingerprint([hook])) != _comparable(recorded):
            raise ValueError(
                f"backbone {recorded['backbone']!r} as loaded now differs from the one that wrote store "
                f"{store.path} (weights, preprocessing or hooks changed); re-cache the stores "
                "(`saebench cache-mini`) and retrain the USAE"
            )
        fns[name] = backbone_feature_fn(backbone, hook, store.spec["tokens"]["selection"], stats[name])
    return fns


def _comparable(fingerprint: Mapping[str, Any]) -> dict[str, Any]:
    """The fingerprint without the state-dict digest when the weights file's digest is there: building
    EfficientNet-Lite0 runs its hook probe in training mode, which moves the BatchNorm running statistics by
    an amount that depends on the thread count, so that digest differs between ``torch.set_num_threads``
    settings while the weights file is the same."""
    weights = dict(fingerprint["weights"])
    if "file_sha256" in weights:
        weights.pop("state_dict_sha256", None)
    return {**json.loads(canonical_json(fingerprint)), "weights": weights}


def universal_concepts(report: UniversalityReport, n: int) -> list[int]:
    """The ``n`` concepts of highest aggregate energy that fire (code above the threshold) in every model
    (fewer when fewer do). Our choice of what to show: usae.md §1.8 does not say how the paper's CAM concepts
    were picked."""
    in_all = (report.fires > 0).all(dim=0)
    return [int(k) for k in energy_ranking(report.energy_aggregate) if in_all[k]][:n]


def cam_images(
    usae: UniversalSAE,
    feature_fns: Mapping[str, FeatureFn],
    concepts: Sequence[int],
    *,
    steps: int,
    seed: int,
    image_size: int,
    lr: float = 0.05,
) -> tuple[dict[int, dict[str, torch.Tensor]], dict[int, dict[str, float]]]:
    """``(images, objectives)``: per concept, ``{model: (3, S, S)}`` grey images that model sees and their
    objective, from :func:`coordinated_activation_maximization` (jitter ``image_size // 16`` pixels, at least
    1, as the default 4 of 64)."""
    images, objectives = {}, {}
    for concept in concepts:
        found = coordinated_activation_maximization(
            usae,
            feature_fns,
            concept,
            size=image_size,
            steps=steps,
            lr=lr,
            jitter=max(1, image_size // 16),
            seed=seed,
        )
        images[concept] = {name: grey(image.unsqueeze(0))[0] for name, image in found.items()}
        objectives[concept] = {
            name: concept_activation(usae, name, feature_fns[name], image, concept)
            for name, image in found.items()
        }
    return images, objectives


def cam_grid_figure(
    images: Mapping[int, Mapping[str, torch.Tensor]],
    objectives: Mapping[int, Mapping[str, float]],
    title: str = "",
) -> Figure:
    """One row per concept, one column per model: each ``(3, H, W)`` image titled with its model and
    objective."""
    rows = list(images)
    models = list(images[rows[0]])
    figure = Figure(figsize=(2.2 * len(models), 2.4 * len(rows) + 0.4))
    FigureCanvasAgg(figure)
    for r, concept in enumerate(rows):
        for c, name in enumerate(models):
            axis = figure.add_subplot(len(rows), len(models), r * len(models) + c + 1)
            axis.imshow(images[concept][name].detach().clamp(0, 1).permute(1, 2, 0).cpu().numpy())
            axis.set_title(f"{name}\nconcept {concept}: {objectives[concept][name]:.2f}", fontsize=8)
            axis.axis("off")
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    return figure


def save_cam_figure(
    usae: UniversalSAE,
    feature_fns: Mapping[str, FeatureFn],
    concepts: Sequence[int],
    path: str | Path,
    *,
    steps: int = 128,
    seed: int = 0,
    image_size: int = 56,
    lr: float = 0.05,
) -> dict[int, dict[str, float]]:
    """Run CAM for ``concepts`` on every model of ``feature_fns`` and write the grid PNG to ``path``; returns
    ``{concept: {model: objective}}``.

    Defaults: 56 px, twice Fashion-MNIST's 28 (the zoo models get an antialiased 2x downsampling; the image
    size barely changes the cost, EfficientNet-Lite0 always runs at 224 px), and 128 steps: on the mini-tier
    group, one thread, a step cost 0.13-0.18 s for EfficientNet-Lite0 and about 0.01 s for each zoo model, and
    3 concepts took 81 s on the shared 2-core machine (load 6); every objective rose (EfficientNet from
    0.3-1.2 to 4.6-5.6)."""
    if not concepts:
        raise ValueError("concepts is empty; give the USAE concept indices to visualise")
    images, objectives = cam_images(
        usae, feature_fns, concepts, steps=steps, seed=seed, image_size=image_size, lr=lr
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure = cam_grid_figure(images, objectives, title=f"USAE CAM: {steps} steps, {image_size} px")
    figure.savefig(path, format="png", metadata={"Software": None})
    return objectives
