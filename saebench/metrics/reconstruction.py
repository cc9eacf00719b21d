"""Reconstruction metrics: how well ``x_hat`` reproduces ``x``.

Shapes: ``x`` and ``x_hat`` are ``(..., d)`` with identical shapes; leading dimensions are flattened into
``n`` rows (samples or tokens). Everything is computed in float64 and returned as a Python ``float``
(per-sample variants return a float64 ``(n,)`` tensor). NaN/Inf or mismatched shapes raise ``ValueError``.

The papers we reproduce use several incompatible definitions of "the same" quantity; each is its own
function below, and its docstring names the paper (notes in ``../shared/papers/``) whose code computes it:

==================================  =========================================================================
function                            definition
==================================  =========================================================================
``mse``                             mean over all n*d entries of (x - x_hat)^2
``normalized_mse``                  mean_i ||x_i - x_hat_i||^2 / ||x_i||^2                      (MSAE)
``mse_normalized_by_input_norm``    mean over entries of (x - x_hat)^2 / ||x_i||_2              (PatchSAE)
``fvu_dataset``                     sum ||x - x_hat||^2 / sum ||x - mean_rows(x)||^2
``fvu_per_sample_mean``             mean_i Var_d(x_i - x_hat_i) / Var_d(x_i)                    (MSAE)
``r2_global_mean``                  1 - mean (x - x_hat)^2 / (mean (x - scalar mean(x))^2 + 1e-6) (USAE)
``r2_global_mean_batch_averaged``   the above per batch of rows, averaged over batches          (USAE eval)
``r2_per_dimension_mean``           1 - fvu_dataset
``explained_variance_uncentered``   1 - mean_i ||x_i - x_hat_i||^2 / mean_i ||x_i||^2            (PatchSAE)
``cosine_similarity_mean``          mean_i cos(x_i, x_hat_i)                                    (MSAE)
==================================  =========================================================================
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F

from saebench.metrics.validation import paired_rows

__all__ = [
    "USAE_R2_EPS",
    "mse",
    "normalized_mse",
    "normalized_mse_per_sample",
    "mse_normalized_by_input_norm",
    "fvu_dataset",
    "fvu_per_sample",
    "fvu_per_sample_mean",
    "r2_global_mean",
    "r2_global_mean_batch_averaged",
    "r2_per_dimension_mean",
    "explained_variance_uncentered",
    "cosine_similarity_per_sample",
    "cosine_similarity_mean",
]

USAE_R2_EPS = 1e-6
"""What the USAE code (overcomplete ``metrics.Epsilon``) adds to the R^2 denominator (usae.md §2.1)."""

COSINE_EPS = 1e-8
"""Norm floor of ``torch.nn.functional.cosine_similarity`` (its default), which the MSAE code calls."""


# ----------------------------------------------------------------------------- row kernels
# Each kernel takes validated float64 (n, d) rows; the public functions and the streaming
# accumulators (saebench.metrics.streaming) share them, so a definition lives in exactly one place.
# A per-row kernel returns NaN on the rows where its ratio is undefined: the one-shot functions turn
# that into an error, the accumulator into a NaN result that names the reason.


class RowKernel(NamedTuple):
    """A per-row reconstruction metric: ``compute(x, x_hat) -> (n,)``, NaN where ``undefined_when`` holds."""

    metric: str
    compute: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    undefined_when: str
    remedy: str

    def defined_values(self, x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
        """The ``(n,)`` values, or ``ValueError`` naming the metric and the rows it is undefined on."""
        values = self.compute(x, x_hat)
        bad = int(values.isnan().sum().item())
        if bad:
            raise ValueError(
                f"{self.metric} is undefined on rows where {self.undefined_when}: "
                f"{bad} such row(s); {self.remedy}"
            )
        return values


def _ratio_or_nan(numerator: torch.Tensor, denominator: torch.Tensor) -> torch.Tensor:
    return torch.where(denominator > 0, numerator / denominator, torch.nan)


FVU_PER_SAMPLE = RowKernel(
    "fvu_per_sample_mean",
    lambda x, x_hat: _ratio_or_nan((x - x_hat).var(dim=-1, unbiased=False), x.var(dim=-1, unbiased=False)),
    "x_i has zero variance across its coordinates",
    "drop those rows or use fvu_dataset",
)
NORMALIZED_MSE = RowKernel(
    "normalized_mse",
    lambda x, x_hat: _ratio_or_nan((x - x_hat).pow(2).sum(dim=-1), x.pow(2).sum(dim=-1)),
    "x_i is all zeros",
    "drop all-zero rows",
)
MSE_OVER_INPUT_NORM = RowKernel(
    "mse_normalized_by_input_norm",
    lambda x, x_hat: _ratio_or_nan((x - x_hat).pow(2).mean(dim=-1), x.norm(dim=-1)),
    "x_i is all zeros",
    "drop all-zero rows",
)
COSINE = RowKernel(
    "cosine_similarity_mean",
    lambda x, x_hat: F.cosine_similarity(x, x_hat, dim=-1, eps=COSINE_EPS),
    "never (norms are floored at 1e-8)",
    "",
)
ROW_KERNELS = (FVU_PER_SAMPLE, NORMALIZED_MSE, MSE_OVER_INPUT_NORM, COSINE)

FVU_DATASET_UNDEFINED = "every row of x is identical (zero variance over rows)"
EV_UNCENTERED_UNDEFINED = "x is all zeros"


def r2_global_mean_of_rows(x: torch.Tensor, x_hat: torch.Tensor, eps: float) -> float:
    """The :func:`r2_global_mean` kernel on already-validated float64 ``(n, d)`` rows."""
    residual = (x - x_hat).pow(2).mean()
    total = (x - x.mean()).pow(2).mean()
    return float(1.0 - residual / (total + eps))


# ----------------------------------------------------------------------------- public metrics


def mse(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    """Mean squared error over every entry: ``sum_{i,j} (x_ij - x_hat_ij)^2 / (n * d)``.

    USAE Table 1 reports this on standardised activations (usae.md §2.2); it is also the usual training loss.
    """
    x, x_hat = paired_rows(x, x_hat)
    return float((x - x_hat).pow(2).mean())


def normalized_mse_per_sample(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """``(n,)``: ``||x_i - x_hat_i||^2 / ||x_i||^2`` per row (the ``1/d`` of the per-row means cancels)."""
    return NORMALIZED_MSE.defined_values(*paired_rows(x, x_hat))


def normalized_mse(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    """Per-sample normalised MSE averaged over rows: ``mean_i ||x_i - x_hat_i||^2 / ||x_i||^2``.

    MSAE code: ``metrics.normalized_mean_squared_error`` (mean_d (x_hat - x)^2 / mean_d x^2 per sample) and
    the ``nmse`` training loss on mean-centred data (msae.md §2.2, §3.5). Zero-norm rows raise ``ValueError``.
    """
    return float(normalized_mse_per_sample(x, x_hat).mean())


def mse_normalized_by_input_norm(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    """Each squared error divided by the (non-squared) L2 norm of its row, averaged over all ``n * d``
    entries: ``mean_{i,j} (x_ij - x_hat_ij)^2 / ||x_i||_2``.

    PatchSAE code (``sparse_autoencoder.py``, from Hugo Fry / early SAELens): the training loss reported as
    "MSE" in PatchSAE Table 2 (patchsae.md §1.2-1.3). Rows with zero norm raise ``ValueError``.
    """
    return float(MSE_OVER_INPUT_NORM.defined_values(*paired_rows(x, x_hat)).mean())


def fvu_dataset(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    """Fraction of variance unexplained over the dataset:
    ``sum_i ||x_i - x_hat_i||^2 / sum_i ||x_i - xbar||^2``, where ``xbar`` (shape ``(d,)``) is the
    per-dimension mean over all rows.

    The usual dataset-level FVU (e.g. SAELens / SAEBench "normalised MSE against the mean prediction";
    msae.md §2.2 contrasts it with MSAE's per-sample definition). Equals ``1 - r2_per_dimension_mean``.
    """
    x, x_hat = paired_rows(x, x_hat)
    total = (x - x.mean(dim=0)).pow(2).sum()
    if total <= 0:
        raise ValueError(f"fvu_dataset is undefined when {FVU_DATASET_UNDEFINED}")
    return float((x - x_hat).pow(2).sum() / total)


def fvu_per_sample(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """``(n,)``: ``Var_d(x_i - x_hat_i) / Var_d(x_i)``, the variance across the ``d`` coordinates of one row
    (torch ``.var(dim=-1)``; the ``n-1`` vs ``n`` factor cancels). Constant rows ``x_i`` raise ``ValueError``.
    """
    return FVU_PER_SAMPLE.defined_values(*paired_rows(x, x_hat))


def fvu_per_sample_mean(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    """MSAE's FVU: the mean over rows of :func:`fvu_per_sample`.

    MSAE code ``metrics.explained_variance`` (which, despite its name, returns FVU; msae.md §2.2). Each row's
    own coordinate mean is subtracted from numerator and denominator, so it differs from :func:`fvu_dataset`.
    The paper's headline "FVU < 0.1" uses this definition.
    """
    return float(fvu_per_sample(x, x_hat).mean())


def r2_global_mean(x: torch.Tensor, x_hat: torch.Tensor, eps: float = USAE_R2_EPS) -> float:
    """R^2 around the global scalar mean, pooled over all rows:
    ``1 - mean((x - x_hat)^2) / (mean((x - m)^2) + eps)`` with ``m = x.mean()`` over all ``n * d`` entries.

    USAE code: overcomplete's ``r2_score`` with ``eps = 1e-6`` (usae.md §2.1, paper Eq. 10). The scalar mean
    makes it >= :func:`r2_per_dimension_mean` on data whose dimensions have different means.
    """
    x, x_hat = paired_rows(x, x_hat)
    return r2_global_mean_of_rows(x, x_hat, eps)


def r2_global_mean_batch_averaged(
    x: torch.Tensor, x_hat: torch.Tensor, batch_size: int, eps: float = USAE_R2_EPS
) -> float:
    """:func:`r2_global_mean` computed on consecutive batches of ``batch_size`` rows (the last batch may be
    smaller, as an un-dropped DataLoader batch) and averaged over batches, unweighted.

    This is the value the USAE analysis reports: per batch of 100 images x 196 tokens = 19,600 rows,
    then averaged (usae.md §2.1, ``uni_analysis.py``).
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    x, x_hat = paired_rows(x, x_hat)
    values = [
        r2_global_mean_of_rows(xb, hb, eps)
        for xb, hb in zip(x.split(batch_size), x_hat.split(batch_size), strict=True)
    ]
    return sum(values) / len(values)


def r2_per_dimension_mean(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    """R^2 around the per-dimension mean:
    ``1 - sum ||x_i - x_hat_i||^2 / sum ||x_i - xbar||^2 = 1 - fvu_dataset``.

    The textbook coefficient of determination pooled over dimensions; the USAE notes (usae.md §2.1) name it as
    the stricter variant of their global-mean R^2. No epsilon.
    """
    return 1.0 - fvu_dataset(x, x_hat)


def explained_variance_uncentered(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    """``1 - mean_i ||x_i - x_hat_i||^2 / mean_i ||x_i||^2``: the denominator is the uncentred second moment,
    not a variance, and the ratio is of pooled means (not a mean of per-row ratios).

    PatchSAE code ``sae_trainer._calculate_metrics`` ("metrics/explained_variance"; patchsae.md §1.3).
    """
    x, x_hat = paired_rows(x, x_hat)
    total = x.pow(2).sum()
    if total <= 0:
        raise ValueError(f"explained_variance_uncentered is undefined when {EV_UNCENTERED_UNDEFINED}")
    return float(1.0 - (x - x_hat).pow(2).sum() / total)


def cosine_similarity_per_sample(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """``(n,)``: ``<x_i, x_hat_i> / (max(||x_i||, 1e-8) * max(||x_hat_i||, 1e-8))`` (torch
    ``cosine_similarity`` semantics: an all-zero row gives 0)."""
    return COSINE.defined_values(*paired_rows(x, x_hat))


def cosine_similarity_mean(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    """Mean over rows of :func:`cosine_similarity_per_sample`.

    MSAE "CS" (msae.md §2.3; headline cosine ~ 0.99), computed with torch ``F.cosine_similarity`` per sample.
    """
    return float(cosine_similarity_per_sample(x, x_hat).mean())
