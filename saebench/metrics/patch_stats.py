"""Per-latent and per-class statistics of a PatchSAE's token codes (Lim et al., ICLR 2025, §3.2, Eqs. 3-5).

Shapes: ``codes`` is ``(n_images, T, h)``: the ReLU codes of every token of every image (CLS, patches and any
prompt tokens), ``h`` latents. ``labels`` is ``(n_images,)`` integer class ids.

PatchSAE turns token codes into image-level numbers in two different ways (patchsae.md §2.1):

1. :func:`image_level_activation`: the mean over tokens, ``a_img[s] = mean_j h_ij[s]``; used for the
   reference images and the summary statistics :func:`latent_frequency`, :func:`latent_mean_activation`,
   :func:`latent_label_entropy` (authors' ``tasks/utils.get_sae_activations``,
   ``compute_sae_feature_data.py``).
2. :func:`token_counts_above_threshold`: Eq. 4-5, the number of tokens on which a latent exceeds
   ``tau = 0.2``; summed per class by :func:`class_latent_statistics` (authors'
   ``compute_class_wise_sae_activation.py``, ``cls_sae_cnt.npy``).

The training-time logs live elsewhere: "L0" of Table 2 is :func:`saebench.metrics.sparsity.l0_count` over the
codes (latents > 0 per token, averaged over tokens and images) and the logged explained variance is
:func:`saebench.metrics.reconstruction.explained_variance_uncentered`. The logged dead-latent count is
reproduced here (:func:`window_frequency_per_image`, with the corrected :func:`window_frequency_per_token`).
"""

from __future__ import annotations

import torch

__all__ = [
    "ACTIVATION_THRESHOLD",
    "DEAD_FREQUENCY_THRESHOLD",
    "DEAD_WINDOW_STEPS",
    "ENTROPY_EPS",
    "N_REFERENCE_IMAGES",
    "image_level_activation",
    "token_counts_above_threshold",
    "class_latent_statistics",
    "latent_frequency",
    "latent_mean_activation",
    "top_reference_images",
    "latent_label_entropy",
    "window_frequency_per_image",
    "window_frequency_per_token",
    "dead_latents_in_window",
]

ACTIVATION_THRESHOLD = 0.2
"""tau of Eq. 4: a token counts for a latent when its code exceeds 0.2 (paper §A.1; log10 0.2 = -0.699)."""

N_REFERENCE_IMAGES = 10
"""Reference images kept per latent (authors' ``compute_sae_feature_data.py``; the demo shows 5)."""

ENTROPY_EPS = 1e-9
"""``-sum p ln(p + 1e-9)`` in the authors' ``analysis/utils.py`` label entropy."""

DEAD_WINDOW_STEPS = 64
"""``dead_feature_window`` of the authors' training script: a latent with no firing in 64 steps is dead."""

DEAD_FREQUENCY_THRESHOLD = 1e-6
"""The code logs latents whose window frequency is below 1e-6 as dead (patchsae.md §1.3)."""


def _check_codes(codes: torch.Tensor) -> None:
    if codes.ndim != 3:
        raise ValueError(
            f"codes must be (n_images, n_tokens, n_latents), got shape {tuple(codes.shape)}; "
            "reshape flat token rows with codes.reshape(n_images, n_tokens, -1)"
        )


def _check_labels(labels: torch.Tensor, n_images: int) -> None:
    if labels.ndim != 1 or labels.shape[0] != n_images:
        raise ValueError(f"labels must be ({n_images},) class ids, one per image, got {tuple(labels.shape)}")
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(f"labels must be integer class ids, got dtype {labels.dtype}")
    if n_images and int(labels.min()) < 0:
        raise ValueError("labels must be class ids >= 0")


def image_level_activation(codes: torch.Tensor) -> torch.Tensor:
    """``(n_images, T, h) -> (n_images, h)``: the mean of each latent over all tokens of an image.

    All tokens count, CLS and prompt tokens included (paper Fig. 2a; authors' ``get_sae_activations``).
    """
    _check_codes(codes)
    return codes.float().mean(dim=1)


def token_counts_above_threshold(
    codes: torch.Tensor, threshold: float = ACTIVATION_THRESHOLD
) -> torch.Tensor:
    """``(n_images, T, h) -> (n_images, h)`` int64: ``a_i[s] = sum_j 1[h_ij[s] > tau]`` (paper Eqs. 4-5)."""
    _check_codes(codes)
    return (codes > threshold).sum(dim=1)


def class_latent_statistics(
    codes: torch.Tensor, labels: torch.Tensor, n_classes: int, threshold: float = ACTIVATION_THRESHOLD
) -> torch.Tensor:
    """``(n_classes, h)`` int64: ``a_c[s] = sum_{i in class c} sum_j 1[h_ij[s] > tau]`` (paper Eq. 5).

    Summed over the images of each class; a class without images has a row of zeros. The statistic is
    additive, so chunks of a large dataset can be summed. The dataset-level ``a_D`` is ``.sum(dim=0)``.
    Authors' ``cls_sae_cnt.npy`` has this shape (classes first; their README says the reverse).
    """
    _check_codes(codes)
    _check_labels(labels, codes.shape[0])
    if labels.numel() and int(labels.max()) >= n_classes:
        raise ValueError(f"labels go up to {int(labels.max())} but n_classes is {n_classes}")
    counts = token_counts_above_threshold(codes, threshold)
    out = torch.zeros(n_classes, codes.shape[2], dtype=torch.int64, device=codes.device)
    return out.index_add_(0, labels.to(codes.device), counts)


def _check_image_acts(image_acts: torch.Tensor) -> None:
    if image_acts.ndim != 2:
        raise ValueError(
            f"image_acts must be (n_images, n_latents) image-level activations, "
            f"got {tuple(image_acts.shape)}; "
            "compute them from token codes with image_level_activation(codes)"
        )


def latent_frequency(image_acts: torch.Tensor) -> torch.Tensor:
    """``(n_images, h) -> (h,)`` float64: the share of images whose image-level activation is > 0.

    "Sparsity" / activated frequency of paper §3.2 (authors' ``sae_sparsity.pt``). A latent firing on any one
    token of an image makes that image's mean positive. Plots use ``log10(freq + 1e-9)``.
    """
    _check_image_acts(image_acts)
    return (image_acts > 0).to(torch.float64).mean(dim=0)


def latent_mean_activation(image_acts: torch.Tensor) -> torch.Tensor:
    """``(n_images, h) -> (h,)`` float64: the sum of image-level activations over the images where it is > 0,
    divided by the number of those images (paper §3.2; authors' ``sae_mean_acts.pt``).

    A latent that is never active gives NaN (0 / 0), as in the authors' code.
    """
    _check_image_acts(image_acts)
    positive = image_acts > 0
    total = torch.where(positive, image_acts, torch.zeros_like(image_acts)).to(torch.float64).sum(dim=0)
    return total / positive.sum(dim=0).to(torch.float64)


def top_reference_images(
    image_acts: torch.Tensor, k: int = N_REFERENCE_IMAGES
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` images with the highest image-level activation of each latent: ``(values, indices)``, both
    ``(k, h)``, highest first (authors' ``max_activating_image_values`` / ``_indices``)."""
    _check_image_acts(image_acts)
    if not 1 <= k <= image_acts.shape[0]:
        raise ValueError(f"k must be between 1 and the number of images ({image_acts.shape[0]}), got {k}")
    values, indices = image_acts.topk(k, dim=0)
    return values, indices


def latent_label_entropy(
    image_acts: torch.Tensor, labels: torch.Tensor, k: int = N_REFERENCE_IMAGES
) -> torch.Tensor:
    """``(h,)`` float64 label entropy of each latent's top-``k`` reference images (paper Eq. 3; Fry 2024).

    ``sum_c`` = total image-level activation of the reference images labelled ``c``, ``p_c = sum_c / sum_c'
    sum_c'``, entropy ``= -sum_c p_c ln(p_c + 1e-9)`` (natural log, authors' ``analysis/utils.py``). 0 means
    all reference images share one label.

    The authors return -1 when fewer than ``k`` reference images are counted. Our reading: a reference image
    counts when its activation is > 0, so a latent active on fewer than ``k`` images gets -1 (NOTES.md).
    """
    _check_image_acts(image_acts)
    _check_labels(labels, image_acts.shape[0])
    values, indices = top_reference_images(image_acts, k)
    values = values.to(torch.float64).clamp_min(0)  # (k, h)
    ref_labels = labels.to(image_acts.device)[indices]  # (k, h)
    # the activation of each reference's label: sum_c for c = label(i), without a (n_classes, h) table
    same_label = ref_labels.unsqueeze(0) == ref_labels.unsqueeze(1)  # (k, k, h)
    label_sums = (same_label * values.unsqueeze(0)).sum(dim=1)  # (k, h)
    total = values.sum(dim=0)
    safe_total = torch.where(total > 0, total, torch.ones_like(total))
    # sum over references of (v_i / total) ln(p_label(i)) groups into sum_c p_c ln p_c
    entropy = -((values / safe_total) * torch.log(label_sums / safe_total + ENTROPY_EPS)).sum(dim=0)
    enough = (values > 0).sum(dim=0) >= k
    return torch.where(enough, entropy, torch.full_like(entropy, -1.0))


def window_frequency_per_image(codes: torch.Tensor) -> torch.Tensor:
    """``(n_images, T, h) -> (h,)`` float64: token firings over a window divided by the number of *images*.

    The authors' logged "feature sparsity" (SAELens-era trainer; patchsae.md §1.3): ``act_freq_scores`` adds
    ``(codes > 0).sum`` over images and tokens, ``n_frac_active_tokens`` adds the number of images, so the
    ratio can exceed 1 (up to ``T``). ``codes`` stacks the images of the window (64 steps in the code).
    """
    _check_codes(codes)
    return (codes > 0).sum(dim=(0, 1)).to(torch.float64) / codes.shape[0]


def window_frequency_per_token(codes: torch.Tensor) -> torch.Tensor:
    """``(n_images, T, h) -> (h,)`` float64: the share of tokens of the window on which each latent fires.

    The corrected variant of :func:`window_frequency_per_image` (a frequency in [0, 1]); equals it divided by
    ``T``. It is :func:`saebench.metrics.sparsity.firing_frequency` over the window's token rows.
    """
    return window_frequency_per_image(codes) / codes.shape[1]


def dead_latents_in_window(
    frequency: torch.Tensor, threshold: float = DEAD_FREQUENCY_THRESHOLD
) -> torch.Tensor:
    """``(h,)`` bool: latents whose window frequency is below ``threshold`` (authors' code: 1e-6).

    Give it :func:`window_frequency_per_image` for the logged count or :func:`window_frequency_per_token` for
    the corrected one. Both mark a latent with no firing as dead; they differ once a frequency below 1e-6
    becomes possible (more than 1e6 images, or 1e6 / T images per-token, in a window).
    """
    if frequency.ndim != 1:
        raise ValueError(f"frequency must be (n_latents,), got shape {tuple(frequency.shape)}")
    if not threshold > 0:
        raise ValueError(f"threshold must be > 0, got {threshold!r}")
    return frequency < threshold
