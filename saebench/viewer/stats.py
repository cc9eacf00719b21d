"""Per-latent statistics for the viewer, accumulated over chunks of token codes.

The definitions follow PatchSAE (Lim et al., ICLR 2025; ``shared/papers/patchsae.md`` §2.1-§2.2, and the
authors' ``compute_sae_feature_data.py`` / ``compute_class_wise_sae_activation.py``). With ``h[i, j, s]`` the
code of latent ``s`` at token ``j`` of image ``i`` (all ``T`` tokens, class token included):

- image-level activation ``a_img[i, s] = mean_j h[i, j, s]`` (§2.1 definition 1);
- ``frequency[s]`` = fraction of images with ``a_img[i, s] > 0`` (§2.2 "activated frequency");
- ``mean_activation[s]`` = sum of ``a_img[:, s]`` / number of images with ``a_img[i, s] > 0``; NaN for a
  latent that never fires (the authors' code divides by zero the same way);
- top images: the ``top_n`` images with the largest positive ``a_img[:, s]`` ("reference images"; the code
  keeps 10), ties broken by the smaller image index;
- ``label_entropy[s]`` (Eq. 3, after Fry 2024): ``p_c`` = share of the reference images' total activation
  carried by images of class ``c``; entropy ``-sum_c p_c ln(p_c + 1e-9)`` (natural log); ``-1`` when fewer
  than ``top_n`` reference images have a positive activation or there are no labels (the code's ``-1`` rule);
- ``class_counts[s, c] = sum_{i in class c} sum_j 1[h[i, j, s] > tau]`` (Eq. 4-5, ``tau = 0.2`` in §A.1).

The dense, whole-dataset forms of these statistics are :mod:`saebench.metrics.patch_stats`; this module
streams them chunk by chunk from the non-zero codes only (memory ``O(h * (top_n + C))``, time proportional
to the non-zeros), and its test checks the two agree. Two extra summaries are ours: ``token_frequency[s]``
(fraction of tokens with ``h > 0``) and ``max_activation[s]`` (the largest ``h`` over all tokens, at least 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from saebench.metrics.patch_stats import ACTIVATION_THRESHOLD, ENTROPY_EPS


@dataclass(frozen=True)
class LatentStats:
    """Finished statistics for ``h`` latents over ``n`` images and ``C`` classes (numpy arrays).

    frequency, token_frequency, mean_activation, max_activation, label_entropy: ``(h,)`` float64.
    class_counts: ``(h, C)`` int64. top_images: ``(h, top_n)`` int64 image indices, ``-1`` where a latent has
    fewer than ``top_n`` images with a positive activation. top_values: ``(h, top_n)`` float32 image-level
    activations of those images (0 at the ``-1`` slots).
    """

    frequency: np.ndarray
    token_frequency: np.ndarray
    mean_activation: np.ndarray
    max_activation: np.ndarray
    label_entropy: np.ndarray
    class_counts: np.ndarray
    top_images: np.ndarray
    top_values: np.ndarray


def label_entropy(top_images: Tensor, top_values: Tensor, labels: Tensor | None, n_classes: int) -> Tensor:
    """PatchSAE's label entropy (patchsae.md §2.2, Eq. 3) of each latent's reference images.

    Args:
        top_images: ``(h, k)`` image indices, ``-1`` for an empty slot.
        top_values: ``(h, k)`` their image-level activations.
        labels: ``(n,)`` class of each image, or ``None`` (then every entropy is ``-1``).
        n_classes: ``C``; labels lie in ``0..C-1``.

    Returns:
        ``(h,)`` float64 entropies in nats; ``-1`` where fewer than ``k`` slots are filled.
    """
    h, k = top_images.shape
    if labels is None or n_classes == 0 or k == 0:
        return torch.full((h,), -1.0, dtype=torch.float64)
    filled = top_images >= 0
    slot_labels = labels[top_images.clamp(min=0)]
    mass = torch.zeros(h, n_classes, dtype=torch.float64)
    mass.scatter_add_(1, slot_labels, torch.where(filled, top_values.double(), 0.0))
    prob = mass / mass.sum(dim=1, keepdim=True).clamp(min=torch.finfo(torch.float64).tiny)
    entropy = -(prob * torch.log(prob + ENTROPY_EPS)).sum(dim=1)
    return torch.where(filled.all(dim=1), entropy, torch.full_like(entropy, -1.0))


class LatentStatsAccumulator:
    """Streams chunks of codes ``(b, T, h)`` in image order and finishes into :class:`LatentStats`.

    Memory is ``O(h * (top_n + C))`` whatever the number of images.
    """

    def __init__(self, n_latents: int, n_classes: int, top_n: int, tau: float = ACTIVATION_THRESHOLD) -> None:
        if n_latents <= 0:
            raise ValueError(f"n_latents must be positive, got {n_latents}")
        if top_n <= 0:
            raise ValueError(f"top_n must be positive, got {top_n}")
        self.n_latents, self.n_classes, self.top_n, self.tau = n_latents, n_classes, top_n, tau
        self.n_images = 0
        self.n_tokens = 0
        self._active_images = torch.zeros(n_latents, dtype=torch.int64)
        self._active_tokens = torch.zeros(n_latents, dtype=torch.int64)
        self._image_mean_sum = torch.zeros(n_latents, dtype=torch.float64)
        self._max = torch.zeros(n_latents, dtype=torch.float64)
        self._class_counts = torch.zeros(n_latents, n_classes, dtype=torch.int64)
        self._top_values = torch.zeros(n_latents, 0)
        self._top_images = torch.zeros(n_latents, 0, dtype=torch.int64)
        self._labels: list[Tensor] = []

    def update(self, codes: Tensor, labels: Tensor | None) -> None:
        """Add the next ``b`` images: ``codes`` ``(b, T, h)`` float, ``labels`` ``(b,)`` int64 or ``None``."""
        b, n_tokens, _ = codes.shape
        rows, latents = torch.nonzero(codes.reshape(b * n_tokens, -1), as_tuple=True)
        values = codes.reshape(b * n_tokens, -1)[rows, latents].float()
        self.update_sparse(b, n_tokens, rows, latents, values, labels)

    def update_sparse(
        self, b: int, n_tokens: int, rows: Tensor, latents: Tensor, values: Tensor, labels: Tensor | None
    ) -> None:
        """Add the next ``b`` images given by their non-zero codes: ``values[k]`` is the code of latent
        ``latents[k]`` at row ``rows[k]`` of the chunk's ``(b * T)`` rows ``(image, token)``, image-major.

        Computes what :func:`~saebench.metrics.patch_stats.image_level_activation` and
        :func:`~saebench.metrics.patch_stats.class_latent_statistics` compute on the dense chunk, in time
        proportional to the non-zeros (a chunk of an SAE's codes is mostly zeros).
        """
        h = self.n_latents
        images = torch.div(rows, n_tokens, rounding_mode="floor")
        image_mean = torch.zeros(b * h).index_add_(0, images * h + latents, values).reshape(b, h) / n_tokens
        self._active_images += (image_mean > 0).sum(dim=0)
        self._active_tokens += torch.bincount(latents[values > 0], minlength=h)
        self._image_mean_sum += image_mean.double().sum(dim=0)
        self._max.scatter_reduce_(0, latents, values.double(), reduce="amax")
        if labels is not None:
            above = values > self.tau
            keys = latents[above] * self.n_classes + labels[images[above]]
            self._class_counts += torch.bincount(keys, minlength=h * self.n_classes).reshape(
                h, self.n_classes
            )
            self._labels.append(labels)
        candidates = torch.cat([self._top_values, image_mean.T], dim=1)
        candidate_images = torch.cat(
            [self._top_images, (torch.arange(b) + self.n_images).expand(h, b)], dim=1
        )
        order = torch.sort(candidates, dim=1, descending=True, stable=True).indices[:, : self.top_n]
        self._top_values = candidates.gather(1, order)
        self._top_images = candidate_images.gather(1, order)
        self.n_images += b
        self.n_tokens += b * n_tokens

    def finish(self) -> LatentStats:
        """The statistics of every image seen so far."""
        if self.n_images == 0:
            raise ValueError("no images were added; pass at least one image's codes")
        top_values = torch.zeros(self.n_latents, self.top_n)
        top_images = torch.full((self.n_latents, self.top_n), -1, dtype=torch.int64)
        kept = self._top_values.shape[1]
        positive = self._top_values > 0
        top_values[:, :kept] = torch.where(positive, self._top_values, 0.0)
        top_images[:, :kept] = torch.where(positive, self._top_images, -1)
        labels = torch.cat(self._labels) if self._labels else None
        active = self._active_images.double()
        mean_activation = torch.where(active > 0, self._image_mean_sum / active.clamp(min=1), float("nan"))
        return LatentStats(
            frequency=(active / self.n_images).numpy(),
            token_frequency=(self._active_tokens.double() / self.n_tokens).numpy(),
            mean_activation=mean_activation.numpy(),
            max_activation=self._max.numpy(),
            label_entropy=label_entropy(top_images, top_values, labels, self.n_classes).numpy(),
            class_counts=self._class_counts.numpy(),
            top_images=top_images.numpy(),
            top_values=top_values.numpy().astype(np.float32),
        )
