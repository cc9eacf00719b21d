"""Universality metrics of a Universal SAE (Thasarathan et al. 2025, §3-4; definitions: ``papers/usae.md``
§2.1).

Notation: ``M`` models, ``m`` concepts (latents); ``codes`` of model ``i`` are ``(n, m)`` self-encoded codes
``Z^(i)`` of aligned rows (row ``t`` is the same image token in every model); ``tau`` is the firing threshold
(0.1 in ``uni_analysis.py::analyze``).

- :func:`cross_r2_matrix`: ``R[i, j]`` = R^2 (global scalar mean, Eq. 10) of encoding ``x_i`` with ``Psi_i``
  and decoding with ``D_j``, encoders in eval mode (held-out data); :func:`training_r2_matrix` averages the
  values logged during training (train mode, training batches: the table the authors logged, probably Fig. 5).
- :func:`fire_counts` ``|F_k^(i)|``; :func:`cofire_counts` ``|C_k|`` (Eq. 11: fires in all models on the row).
- :func:`firing_entropy` (Eq. 12-13), :func:`cofire_proportion` (Eq. 14), :func:`cofire_share` (code's
  ``cofire_iou``).
- :func:`concept_energy` (Eq. 9), :func:`energy_ranking`; :func:`log_log_correlation` (Fig. 6c).
- :func:`dead_concept_fractions` (before / after ``tau``).
- :func:`consistency_with_independent`, :func:`random_normal_like`, :func:`cosine_curve_auc` (§4.4, Fig. 7).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np
import torch

from saebench.metrics.alignment import DictionaryAlignment, hungarian_alignment
from saebench.metrics.reconstruction import r2_global_mean, r2_per_dimension_mean
from saebench.metrics.validation import check_finite
from saebench.sae.universal import UniversalSAE

__all__ = [
    "FIRING_THRESHOLD",
    "ENTROPY_EPS",
    "cross_r2_matrix",
    "training_r2_matrix",
    "fire_counts",
    "cofire_counts",
    "firing_entropy",
    "cofire_proportion",
    "cofire_share",
    "concept_energy",
    "energy_ranking",
    "LogLogFit",
    "log_log_correlation",
    "dead_concept_fractions",
    "consistency_with_independent",
    "random_normal_like",
    "cosine_curve_auc",
]

FIRING_THRESHOLD = 0.1  # uni_analysis.py::analyze(threshold=0.1) (usae.md §2.1)
ENTROPY_EPS = 1e-10  # eps of the authors' entropy and co-fire ratios (usae.md §2.1)


def _codes(codes: torch.Tensor, name: str) -> torch.Tensor:
    if not isinstance(codes, torch.Tensor) or codes.ndim != 2:
        got = tuple(codes.shape) if isinstance(codes, torch.Tensor) else type(codes).__name__
        raise ValueError(f"{name} must be a (n, m) tensor of codes, got {got}")
    check_finite(codes, name)
    return codes.detach()


def _stacked(codes: Sequence[torch.Tensor]) -> torch.Tensor:
    if len(codes) < 2:
        raise ValueError(f"need the codes of at least 2 models, got {len(codes)}")
    rows = [_codes(c, f"codes[{i}]") for i, c in enumerate(codes)]
    if len({r.shape for r in rows}) != 1:
        raise ValueError(
            f"codes of every model must have one shape (aligned rows), got {[r.shape for r in rows]}"
        )
    return torch.stack(rows)


@torch.no_grad()
def cross_r2_matrix(
    usae: UniversalSAE, x: Mapping[str, torch.Tensor], per_dimension: bool = False
) -> torch.Tensor:
    """``(M, M)`` float64 matrix, ``[i, j]`` = R^2 of ``x_j`` from ``Psi_i(x_i) @ D_j``, rows and columns in
    ``usae.models`` order, encoders in eval mode (the module's mode is restored). ``x``: ``{model: (n, d_i)}``
    aligned held-out rows. R^2 around the global scalar mean (overcomplete ``r2_score``, eps 1e-6) or, with
    ``per_dimension``, around the per-dimension mean (usae.md §2.1)."""
    r2 = r2_per_dimension_mean if per_dimension else r2_global_mean
    was_training = usae.training
    usae.eval()
    try:
        out = {i: usae(i, x[i]) for i in usae.models}
        return torch.tensor(
            [[r2(x[j], out[i].x_hat[j]) for j in usae.models] for i in usae.models], dtype=torch.float64
        )
    finally:
        usae.train(was_training)


def training_r2_matrix(history: Sequence[Mapping[str, float | str]], models: Sequence[str]) -> torch.Tensor:
    """``(M, M)`` mean of the ``r2/<i>-><j>`` values logged by
    :func:`~saebench.train.universal.train_universal_sae` (train mode, training batches; the authors'
    per-epoch wandb table). An encoder never chosen gives a row of NaN."""
    table = torch.full((len(models), len(models)), math.nan, dtype=torch.float64)
    for a, i in enumerate(models):
        for b, j in enumerate(models):
            values = [float(h[f"r2/{i}->{j}"]) for h in history if f"r2/{i}->{j}" in h]
            if values:
                table[a, b] = sum(values) / len(values)
    return table


def fire_counts(codes: torch.Tensor, threshold: float = FIRING_THRESHOLD) -> torch.Tensor:
    """``(m,)`` int64 ``|F_k| = #{rows : codes[row, k] > threshold}`` for ``codes (n, m)`` (usae.md §2.1)."""
    return (_codes(codes, "codes") > threshold).sum(dim=0)


def cofire_counts(codes: Sequence[torch.Tensor], threshold: float = FIRING_THRESHOLD) -> torch.Tensor:
    """``(m,)`` int64 ``|C_k|``: rows where concept ``k`` exceeds ``threshold`` in **every** model (Eq. 11).
    ``codes``: one aligned ``(n, m)`` tensor per model."""
    return (_stacked(codes) > threshold).all(dim=0).sum(dim=0)


def _counts(counts: torch.Tensor) -> torch.Tensor:
    if counts.ndim != 2 or counts.shape[0] < 2 or (counts < 0).any():
        raise ValueError(
            f"fire counts must be a non-negative (M >= 2, m) tensor, got shape {tuple(counts.shape)}"
        )
    return counts.to(torch.float64)


def firing_entropy(counts: torch.Tensor) -> torch.Tensor:
    """``(m,)`` normalised firing entropy ``FE_k = -(1 / log M) sum_i p_i log p_i`` with
    ``p_i = |F_k^(i)| / (sum_j |F_k^(j)| + eps)``, logs base 2, ``eps = 1e-10`` inside the log too
    (Eq. 12-13; ``uni_analysis.py``). ``counts``: ``(M, m)`` fire counts. 1 = fires equally in every model,
    0 = one model only; a concept that never fires gets 0."""
    counts = _counts(counts)
    p = counts / (counts.sum(dim=0) + ENTROPY_EPS)
    return -(p * torch.log2(p + ENTROPY_EPS)).sum(dim=0) / math.log2(counts.shape[0])


def cofire_proportion(cofires: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """``(M, m)`` ``CFP_k^(i) = |C_k| / (|F_k^(i)| + eps)`` (Eq. 14). ``cofires (m,)``, ``counts (M, m)``."""
    return cofires.to(torch.float64) / (_counts(counts) + ENTROPY_EPS)


def cofire_share(cofires: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """``(m,)`` the code's ``cofire_iou``: ``|C_k| / (sum_i |F_k^(i)| + eps)``. The denominator is a sum of
    counts, not a set union, so the maximum is ``1 / M`` (usae.md §2.1; not in the paper)."""
    return cofires.to(torch.float64) / (_counts(counts).sum(dim=0) + ENTROPY_EPS)


def concept_energy(codes: torch.Tensor, dictionary: torch.Tensor, squared: bool = False) -> torch.Tensor:
    """``(m,)`` energy ``||E_x[Z_k] D_k||_2`` of each concept; ``codes (n, m)``, ``dictionary (m, d)``.

    ``squared=True``: the paper's Eq. 9 (squared norm); default: the code's ``energy_of_codes`` (not squared).
    Both rank concepts the same (usae.md §2.1)."""
    codes = _codes(codes, "codes").to(torch.float64)
    dictionary = dictionary.detach().to(torch.float64)
    if dictionary.ndim != 2 or dictionary.shape[0] != codes.shape[1]:
        raise ValueError(f"dictionary must be (m={codes.shape[1]}, d), got {tuple(dictionary.shape)}")
    norms = codes.mean(dim=0).abs() * dictionary.norm(dim=1)
    return norms.square() if squared else norms


def energy_ranking(energy: torch.Tensor) -> torch.Tensor:
    """``(m,)`` concept indices by descending energy (ties by index), the order of Fig. 6b."""
    return torch.as_tensor(np.argsort(-energy.detach().cpu().numpy(), kind="stable"))


class LogLogFit(NamedTuple):
    """Pearson ``r`` and least-squares ``slope`` of ``log10(y)`` on ``log10(x)``, over ``n`` concepts."""

    r: float
    slope: float
    n: int


def log_log_correlation(cofires: torch.Tensor, energy: torch.Tensor, min_cofires: int = 1) -> LogLogFit:
    """Fig. 6c: ``np.corrcoef`` and ``np.polyfit(deg=1)`` of ``log10(energy)`` against ``log10(cofires)``
    over concepts with ``cofires >= min_cofires`` and non-zero energy (the code drops zeros; the paper's right
    panel uses ``min_cofires=1000``). ``cofires, energy``: ``(m,)``. Pass the energy you plot (the code:
    summed over models / M; the correlation does not depend on the scale)."""
    c = cofires.detach().to(torch.float64).cpu().numpy()
    e = energy.detach().to(torch.float64).cpu().numpy()
    keep = (c >= max(min_cofires, 1)) & (e > 0)
    if keep.sum() < 2:
        raise ValueError(f"need at least 2 concepts with >= {max(min_cofires, 1)} co-fires and energy > 0")
    lx, ly = np.log10(c[keep]), np.log10(e[keep])
    return LogLogFit(float(np.corrcoef(lx, ly)[0, 1]), float(np.polyfit(lx, ly, 1)[0]), int(keep.sum()))


def dead_concept_fractions(codes: torch.Tensor, threshold: float = FIRING_THRESHOLD) -> tuple[float, float]:
    """``(before, after)``: the fraction of concepts whose code is never ``> 0`` / never ``> threshold`` over
    all rows of ``codes (n, m)`` (the analysis's per-model dead %, usae.md §2.1)."""
    codes = _codes(codes, "codes")
    return float((codes > 0).sum(0).eq(0).double().mean()), float(
        (codes > threshold).sum(0).eq(0).double().mean()
    )


def consistency_with_independent(
    usae_dictionary: torch.Tensor, independent_dictionary: torch.Tensor, threshold: float = 0.5
) -> DictionaryAlignment:
    """§4.4: match each USAE atom ``(m, d)`` to a distinct atom of an independently trained SAE on the same
    model ``(h, d)`` by Hungarian on the (signed) cosine; ``fraction_above_threshold`` is the share of USAE
    concepts with cosine > 0.5."""
    return hungarian_alignment(usae_dictionary.detach(), independent_dictionary.detach(), threshold=threshold)


def random_normal_like(dictionary: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """The §4.4 baseline: a tensor of ``dictionary``'s shape drawn from a normal distribution with the scalar
    mean and variance of ``dictionary``'s entries (the paper: "the mean and variance of each independent SAE's
    dictionary"; whether per atom or global is unstated, we use one scalar pair)."""
    d = dictionary.detach().to(torch.float64)
    noise = torch.randn(d.shape, generator=generator, dtype=torch.float64)
    return d.mean() + d.std(unbiased=False) * noise


def cosine_curve_auc(alignment: DictionaryAlignment) -> float:
    """Area under ``t -> share of reference concepts with matched cosine > t`` for ``t`` in ``[0, 1]``:
    ``sum_t clip(cos_t, 0, 1) / n_reference`` (the integral of the share of values above ``t`` is the mean
    value clipped to ``[0, 1]``). The paper reports the curve's AUC (baseline 0.13) without its exact axis;
    this is our reading (NOTES.md)."""
    return float(alignment.cosines.to(torch.float64).clamp(0.0, 1.0).sum()) / alignment.n_reference
