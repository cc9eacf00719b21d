"""Top-k SAE latent masking: classify with only a class's top-k latents kept (or removed) in every token.

PatchSAE (Lim et al., ICLR 2025, §4.1, Fig. 5b; authors' ``tasks/classification_with_top_k_masking.py``;
patchsae.md §2.5). At the hooked layer, every token ``x`` of an image of class ``c`` is replaced by the
reconstruction of its masked codes, ``W_dec (m ⊙ f(x)) + b_dec + offset``, and the rest of the backbone
classifies the image:

- mask "on": ``m`` keeps only class ``c``'s top-k latents (ranked by ``a_c[s]``, Eq. 5 on the training
  split; :func:`class_top_latents`); "off": it zeroes them and keeps the rest. ``k = h`` gives the identity
  ("on all": the plain reconstruction) and the all-zero mask ("off all": ``b_dec + offset`` everywhere).
- ``offset``: the authors add the constant :data:`CLIP_RECONSTRUCTION_OFFSET` to every element (their
  ``SAE_BIAS``; footnote 4 calls it a "reconstruction score" after Templeton 2024). Its origin is not in the
  repository; :func:`mean_reconstruction_offset` computes the mean reconstruction error, the likely
  origin, for other backbones.
- the score is per-class recall (share of a class's images predicted as that class); the dataset accuracy is
  its macro mean (as parsed from the code's ``metrics.csv``); the micro accuracy is reported too
  (:class:`ClassificationAccuracy`).

``classify_fn(tokens_hat) -> logits`` runs the backbone from the hooked layer on: the zoo ViT's head for
the mini tier, CLIP's zero-shot head for the full tier.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch

from saebench.sae.base import SAE

__all__ = [
    "CLIP_RECONSTRUCTION_OFFSET",
    "AUTHORS_MASKING_KS",
    "MASK_MODES",
    "ClassificationAccuracy",
    "class_top_latents",
    "mask_codes_to_latents",
    "masked_reconstruction",
    "mean_reconstruction_offset",
    "classification_accuracy",
    "masked_classification_accuracy",
    "masking_sweep",
    "masking_sweep_logits",
]

CLIP_RECONSTRUCTION_OFFSET = 0.105131256516992
"""Added to every element of the masked reconstruction in the authors' code (``SAE_BIAS = -0.1051...``
subtracted) for their CLIP ViT-B/16 PatchSAE (patchsae.md §2.5). Specific to that SAE and backbone."""

AUTHORS_MASKING_KS = (1, 2, 5, 10, 50, 100, 500, 1000, 2000, 49152)
"""The k values of the authors' masking script; 49152 = all latents of the 64 x 768 SAE."""

MASK_MODES = ("on", "off")

ClassifyFn = Callable[[torch.Tensor], torch.Tensor]


class ClassificationAccuracy(NamedTuple):
    """Accuracies in percent. ``per_class_recall`` ``(n_classes,)`` is NaN for a class with no images;
    ``macro`` is its mean over the classes that have images; ``micro`` the share of all images right."""

    macro: float
    micro: float
    per_class_recall: torch.Tensor


def class_top_latents(class_stats: torch.Tensor, k: int) -> torch.Tensor:
    """``(n_classes, h) -> (n_classes, k)`` long: each class's ``k`` latents with the largest ``a_c[s]``.

    Descending order; ties go to the lower latent index (a stable sort; the authors' ``argsort`` leaves the
    tie order unspecified).
    """
    if class_stats.ndim != 2:
        raise ValueError(f"class_stats must be (n_classes, n_latents), got shape {tuple(class_stats.shape)}")
    if not 1 <= k <= class_stats.shape[1]:
        raise ValueError(f"k must be between 1 and n_latents ({class_stats.shape[1]}), got {k}")
    order = torch.sort(class_stats, dim=1, descending=True, stable=True).indices
    return order[:, :k]


def _latent_mask(latents: torch.Tensor, n_images: int, n_latents: int, device: torch.device) -> torch.Tensor:
    if latents.ndim == 1:
        latents = latents.expand(n_images, -1)
    if latents.ndim != 2 or latents.shape[0] != n_images:
        raise ValueError(
            f"latents must be (k,) or (n_images={n_images}, k) latent indices, got {tuple(latents.shape)}"
        )
    if latents.numel() and (int(latents.min()) < 0 or int(latents.max()) >= n_latents):
        raise ValueError(f"latent indices must lie in [0, {n_latents})")
    mask = torch.zeros(n_images, n_latents, dtype=torch.bool, device=device)
    return mask.scatter_(1, latents.to(device=device, dtype=torch.long), True)


def mask_codes_to_latents(codes: torch.Tensor, latents: torch.Tensor, mode: str = "on") -> torch.Tensor:
    """``(n_images, T, h)`` codes with, in every token of image ``i``, only ``latents[i]`` kept (``"on"``) or
    ``latents[i]`` zeroed (``"off"``). ``latents``: ``(n_images, k)`` or ``(k,)`` for all images."""
    if codes.ndim != 3:
        raise ValueError(f"codes must be (n_images, n_tokens, n_latents), got shape {tuple(codes.shape)}")
    if mode not in MASK_MODES:
        raise ValueError(f"mode must be one of {MASK_MODES}, got {mode!r}")
    keep = _latent_mask(latents, codes.shape[0], codes.shape[2], codes.device)
    if mode == "off":
        keep = ~keep
    return codes * keep.unsqueeze(1).to(codes.dtype)


@torch.no_grad()
def masked_reconstruction(
    sae: SAE, tokens: torch.Tensor, latents: torch.Tensor, mode: str = "on", offset: float = 0.0
) -> torch.Tensor:
    """``(n_images, T, d) -> (n_images, T, d)``: ``decode(mask(encode(tokens))) + offset`` (module doc)."""
    codes = mask_codes_to_latents(sae.encode(tokens), latents, mode)
    return sae.decode(codes) + offset


@torch.no_grad()
def mean_reconstruction_offset(sae: SAE, tokens: torch.Tensor) -> float:
    """The mean over all elements of ``tokens - sae(tokens).x_hat``: a constant that, added to every
    reconstruction, removes its average bias (our reading of the authors' offset; NOTES.md)."""
    return float((tokens - sae(tokens).x_hat).double().mean())


def classification_accuracy(
    logits: torch.Tensor, labels: torch.Tensor, n_classes: int
) -> ClassificationAccuracy:
    """Per-class recall, macro and micro accuracy (percent) of ``argmax(logits)`` ``(n, n_classes)``."""
    if logits.ndim != 2 or logits.shape[0] != labels.shape[0]:
        raise ValueError(
            f"logits must be (n_images, n_classes) matching labels ({labels.shape[0]},), "
            f"got {tuple(logits.shape)}"
        )
    labels = labels.to(logits.device).long()
    correct = (logits.argmax(dim=1) == labels).to(torch.float64)
    hits = torch.zeros(n_classes, dtype=torch.float64, device=logits.device).index_add_(0, labels, correct)
    counts = torch.bincount(labels, minlength=n_classes).to(torch.float64)
    recall = torch.where(counts > 0, 100.0 * hits / counts.clamp_min(1), float("nan"))
    present = counts > 0
    return ClassificationAccuracy(
        macro=float(recall[present].mean()),
        micro=float(100.0 * correct.mean()),
        per_class_recall=recall.cpu(),
    )


def _check_tokens(tokens: torch.Tensor, labels: torch.Tensor) -> None:
    if tokens.ndim != 3:
        raise ValueError(f"tokens must be (n_images, n_tokens, d), got shape {tuple(tokens.shape)}")
    if labels.ndim != 1 or labels.shape[0] != tokens.shape[0] or labels.numel() == 0:
        raise ValueError(f"labels must be ({tokens.shape[0]},) class ids, got {tuple(labels.shape)}")


def _masked_logits(
    sae: SAE,
    tokens: torch.Tensor,
    labels: torch.Tensor,
    class_latents: torch.Tensor,
    classify_fn: ClassifyFn,
    mode: str,
    offset: float,
    batch_size: int,
) -> torch.Tensor:
    logits = []
    for start in range(0, tokens.shape[0], batch_size):
        chunk, chunk_labels = tokens[start : start + batch_size], labels[start : start + batch_size]
        latents = class_latents.to(chunk.device)[chunk_labels.to(chunk.device).long()]
        logits.append(classify_fn(masked_reconstruction(sae, chunk, latents, mode, offset)))
    return torch.cat(logits)


def _check_class_count(labels: torch.Tensor, n_classes: int) -> None:
    if int(labels.max()) >= n_classes:
        raise ValueError(
            f"labels go up to {int(labels.max())} but the class statistics have {n_classes} classes"
        )


@torch.no_grad()
def masked_classification_accuracy(
    sae: SAE,
    tokens: torch.Tensor,
    labels: torch.Tensor,
    class_latents: torch.Tensor,
    classify_fn: ClassifyFn,
    mode: str = "on",
    offset: float = 0.0,
    batch_size: int = 256,
) -> ClassificationAccuracy:
    """Accuracy when each image's tokens keep (``"on"``) or lose (``"off"``) its *true* class's latents.

    tokens: ``(n_images, T, d)`` hooked-layer tokens; labels: ``(n_images,)``; class_latents:
    ``(n_classes, k)`` (:func:`class_top_latents`); ``classify_fn(tokens_hat (b, T, d)) -> (b, n_classes)``.
    """
    _check_tokens(tokens, labels)
    _check_class_count(labels, class_latents.shape[0])
    logits = _masked_logits(sae, tokens, labels, class_latents, classify_fn, mode, offset, batch_size)
    return classification_accuracy(logits, labels, class_latents.shape[0])


@torch.no_grad()
def masking_sweep_logits(
    sae: SAE,
    tokens: torch.Tensor,
    labels: torch.Tensor,
    class_stats: torch.Tensor,
    ks: Sequence[int],
    classify_fn: ClassifyFn,
    offset: float = 0.0,
    batch_size: int = 256,
) -> dict[str, torch.Tensor]:
    """The logits behind :func:`masking_sweep`, row name -> ``(n_images, n_classes)``; concatenate them over
    chunks of a dataset too large for memory, then score with :func:`classification_accuracy`."""
    _check_tokens(tokens, labels)
    _check_class_count(labels, class_stats.shape[0])
    rows = {
        "no_sae": torch.cat(
            [classify_fn(tokens[s : s + batch_size]) for s in range(0, tokens.shape[0], batch_size)]
        )
    }
    for k in ks:
        top = class_top_latents(class_stats, k)
        for mode in MASK_MODES:
            rows[f"{mode}_{k}"] = _masked_logits(
                sae, tokens, labels, top, classify_fn, mode, offset, batch_size
            )
    return rows


@torch.no_grad()
def masking_sweep(
    sae: SAE,
    tokens: torch.Tensor,
    labels: torch.Tensor,
    class_stats: torch.Tensor,
    ks: Sequence[int],
    classify_fn: ClassifyFn,
    offset: float = 0.0,
    batch_size: int = 256,
) -> dict[str, ClassificationAccuracy]:
    """The rows of the authors' ``metrics.csv``, in their order: ``"no_sae"`` (``classify_fn(tokens)``), then
    ``"on_<k>"``, ``"off_<k>"`` for each ``k`` (top latents from ``class_stats`` ``(n_classes, h)``)."""
    logits = masking_sweep_logits(sae, tokens, labels, class_stats, ks, classify_fn, offset, batch_size)
    return {name: classification_accuracy(row, labels, class_stats.shape[0]) for name, row in logits.items()}
