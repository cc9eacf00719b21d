"""Streaming accumulators: feed batches with ``update``, read every metric with ``compute``.

For data larger than memory (a cached activation store, an evaluation over millions of tokens). State is a
few float64 sums and ``(d,)`` / ``(n_latents,)`` vectors, so memory does not grow with the number of rows. The
pooled metrics are exact (per-dimension means and centred second moments are combined with Chan et al.'s
parallel update, not with raw sums of squares); per-row averages are exact sums of the same row kernels the
one-shot functions in :mod:`saebench.metrics.reconstruction` use. ``merge`` combines accumulators that saw
disjoint data (e.g. one per rank), with the same result as one accumulator seeing all of it.

    acc = ReconstructionAccumulator()
    for x in loader:
        acc.update(x, sae(x).x_hat)
    metrics = acc.compute()          # ReconstructionMetrics; metrics.as_dict() for a run record
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from saebench.metrics.reconstruction import (
    EV_UNCENTERED_UNDEFINED,
    FVU_DATASET_UNDEFINED,
    ROW_KERNELS,
    USAE_R2_EPS,
    r2_global_mean_of_rows,
)
from saebench.metrics.sparsity import (
    HIGH_FREQUENCY_THRESHOLD,
    dead_mask_from_frequency,
    dense_mask_from_frequency,
)
from saebench.metrics.validation import as_rows, paired_rows

__all__ = [
    "ReconstructionMetrics",
    "ReconstructionAccumulator",
    "LatentStatistics",
    "LatentStatsAccumulator",
]


@dataclass(frozen=True)
class ReconstructionMetrics:
    """Every reconstruction metric over the rows seen; each field is the value of the one-shot function of the
    same name in :mod:`saebench.metrics.reconstruction` on all rows at once, except
    ``r2_global_mean_batch_averaged``, which averages over the batches passed to ``update`` (one per call).

    Where a one-shot function would raise because its value is undefined on the data (e.g. a per-sample FVU
    over an all-constant row), the field is NaN and ``undefined`` maps its name to the reason.
    """

    n_rows: int
    n_batches: int
    mse: float
    normalized_mse: float
    mse_normalized_by_input_norm: float
    fvu_dataset: float
    fvu_per_sample_mean: float
    r2_global_mean: float
    r2_global_mean_batch_averaged: float
    r2_per_dimension_mean: float
    explained_variance_uncentered: float
    cosine_similarity_mean: float
    undefined: dict[str, str] = dataclasses.field(default_factory=dict)

    def as_dict(self) -> dict[str, float | int]:
        return dataclasses.asdict(self)


class ReconstructionAccumulator:
    """Streaming :class:`ReconstructionMetrics`. ``update(x, x_hat)`` takes ``(..., d)`` tensors of one shape.

    State: row count; per-dimension mean and centred sum of squares ``(d,)``; the residual sum of squares;
    sums of the per-row kernels; the sum of per-batch global-mean R^2 values and the batch count (all float64,
    on the device of the first batch). ``r2_eps`` is USAE's ``1e-6`` by default.
    """

    def __init__(self, r2_eps: float = USAE_R2_EPS):
        self.r2_eps = r2_eps
        self.reset()

    def reset(self) -> None:
        """Forget every row seen."""
        self.n_rows = 0
        self.n_batches = 0
        self._mean: torch.Tensor | None = None  # (d,) per-dimension mean of x
        self._m2: torch.Tensor | None = None  # (d,) sum over rows of (x - mean)^2, per dimension
        self._sse: torch.Tensor | None = None  # sum of (x - x_hat)^2
        self._row_sums: dict[str, torch.Tensor] = {}  # per-row metric -> sum over its defined rows
        self._undefined_rows: dict[str, int] = {kernel.metric: 0 for kernel in ROW_KERNELS}
        self._r2_batch_sum = 0.0

    @property
    def d(self) -> int | None:
        """Input width, fixed by the first batch (``None`` before any)."""
        return None if self._mean is None else self._mean.shape[0]

    @torch.no_grad()
    def update(self, x: torch.Tensor, x_hat: torch.Tensor) -> ReconstructionAccumulator:
        """Add one batch. Raises on mismatched shapes, NaN/Inf, or a width other than the first batch's."""
        x, x_hat = paired_rows(x, x_hat)
        if self.d is not None and x.shape[1] != self.d:
            raise ValueError(
                f"this accumulator has seen rows of width {self.d}; got a batch of width {x.shape[1]}"
            )
        mean = x.mean(dim=0)
        row_values = {kernel.metric: kernel.compute(x, x_hat) for kernel in ROW_KERNELS}
        self._absorb(
            n_rows=x.shape[0],
            n_batches=1,
            mean=mean,
            m2=(x - mean).pow(2).sum(dim=0),
            sse=(x - x_hat).pow(2).sum(),
            row_sums={metric: values.nansum() for metric, values in row_values.items()},
            undefined_rows={metric: int(values.isnan().sum()) for metric, values in row_values.items()},
            r2_batch_sum=r2_global_mean_of_rows(x, x_hat, self.r2_eps),
        )
        return self

    def merge(self, other: ReconstructionAccumulator) -> ReconstructionAccumulator:
        """Absorb another accumulator's rows (and batches) into this one."""
        if other.r2_eps != self.r2_eps:
            raise ValueError(
                f"cannot merge accumulators with different r2_eps ({self.r2_eps} vs {other.r2_eps})"
            )
        if other.n_rows == 0:
            return self
        if self.d is not None and other.d != self.d:
            raise ValueError(f"cannot merge accumulators of widths {self.d} and {other.d}")
        self._absorb(
            n_rows=other.n_rows,
            n_batches=other.n_batches,
            mean=other._mean,
            m2=other._m2,
            sse=other._sse,
            row_sums=other._row_sums,
            undefined_rows=other._undefined_rows,
            r2_batch_sum=other._r2_batch_sum,
        )
        return self

    def _absorb(self, n_rows, n_batches, mean, m2, sse, row_sums, undefined_rows, r2_batch_sum) -> None:
        if self._mean is None:
            device = mean.device
            self._mean = torch.zeros_like(mean)
            self._m2 = torch.zeros_like(m2)
            self._sse = torch.zeros((), dtype=torch.float64, device=device)
            self._row_sums = {kernel.metric: torch.zeros_like(self._sse) for kernel in ROW_KERNELS}
        device = self._mean.device
        mean, m2 = mean.to(device), m2.to(device)
        total = self.n_rows + n_rows
        delta = mean - self._mean
        # Chan, Golub & LeVeque (1979) pairwise update of mean and centred sum of squares.
        self._m2 = self._m2 + m2 + delta.pow(2) * (self.n_rows * n_rows / total)
        self._mean = self._mean + delta * (n_rows / total)
        self._sse = self._sse + sse.to(device)
        for metric in self._row_sums:
            self._row_sums[metric] = self._row_sums[metric] + row_sums[metric].to(device)
            self._undefined_rows[metric] += undefined_rows[metric]
        self.n_rows = total
        self.n_batches += n_batches
        self._r2_batch_sum += r2_batch_sum

    def compute(self) -> ReconstructionMetrics:
        """All metrics over the rows seen so far (NaN, with a reason, where undefined on this data)."""
        if self.n_rows == 0:
            raise ValueError("ReconstructionAccumulator.compute() called before any update()")
        n, d = self.n_rows, self.d
        entries = n * d
        nan = float("nan")
        undefined: dict[str, str] = {}
        centred_total = self._m2.sum()  # sum_i ||x_i - xbar||^2, xbar the per-dimension mean
        global_mean = self._mean.mean()
        scalar_centred_total = centred_total + n * (self._mean - global_mean).pow(2).sum()
        second_moment = (self._m2 + n * self._mean.pow(2)).sum()  # sum_i ||x_i||^2
        if centred_total > 0:
            fvu = float(self._sse / centred_total)
        else:
            fvu = nan
            undefined["fvu_dataset"] = undefined["r2_per_dimension_mean"] = FVU_DATASET_UNDEFINED
        if second_moment > 0:
            ev_uncentered = float(1.0 - self._sse / second_moment)
        else:
            ev_uncentered = nan
            undefined["explained_variance_uncentered"] = EV_UNCENTERED_UNDEFINED
        row_means = {}
        for kernel in ROW_KERNELS:
            bad = self._undefined_rows[kernel.metric]
            row_means[kernel.metric] = nan if bad else float(self._row_sums[kernel.metric]) / n
            if bad:
                undefined[kernel.metric] = f"{bad} row(s) where {kernel.undefined_when}"
        return ReconstructionMetrics(
            n_rows=n,
            n_batches=self.n_batches,
            mse=float(self._sse / entries),
            fvu_dataset=fvu,
            r2_global_mean=float(
                1.0 - (self._sse / entries) / (scalar_centred_total / entries + self.r2_eps)
            ),
            r2_global_mean_batch_averaged=self._r2_batch_sum / self.n_batches,
            r2_per_dimension_mean=1.0 - fvu,
            explained_variance_uncentered=ev_uncentered,
            undefined=undefined,
            **row_means,
        )


@dataclass(frozen=True)
class LatentStatistics:
    """Latent usage over a window of ``n_rows`` rows.

    firing_counts: ``(n_latents,)`` int64, rows on which each latent fired (``|z| > threshold``).
    activation_sums: ``(n_latents,)`` float64, sum of each latent's code over the rows.
    zero_count: number of exactly-zero code entries.
    """

    n_rows: int
    threshold: float
    firing_counts: torch.Tensor
    activation_sums: torch.Tensor
    zero_count: int

    @property
    def n_latents(self) -> int:
        return self.firing_counts.shape[0]

    @property
    def firing_frequency(self) -> torch.Tensor:
        """``(n_latents,)`` float64: share of rows on which each latent fired (as ``firing_frequency``)."""
        return self.firing_counts.to(torch.float64) / self.n_rows

    @property
    def mean_activation(self) -> torch.Tensor:
        """``(n_latents,)`` float64: each latent's code averaged over all rows (zeros included); the USAE
        "energy" of a concept with a unit-norm atom (usae.md §2.1, Eq. 9 as coded)."""
        return self.activation_sums / self.n_rows

    @property
    def l0_count(self) -> float:
        """Mean number of firing latents per row (see ``sparsity.l0_count``)."""
        return float(self.firing_counts.sum()) / self.n_rows

    @property
    def sparsity_fraction(self) -> float:
        """Share of exactly-zero code entries, MSAE's "L0" (see ``sparsity.sparsity_fraction``)."""
        return self.zero_count / (self.n_rows * self.n_latents)

    def dead_mask(self, max_frequency: float = 0.0) -> torch.Tensor:
        """``(n_latents,)`` bool: firing frequency ``<= max_frequency`` (default: never fired in window)."""
        return dead_mask_from_frequency(self.firing_frequency, max_frequency)

    def dead_fraction(self, max_frequency: float = 0.0) -> float:
        return float(self.dead_mask(max_frequency).to(torch.float64).mean())

    def dense_mask(self, min_frequency: float = HIGH_FREQUENCY_THRESHOLD) -> torch.Tensor:
        """``(n_latents,)`` bool: firing frequency ``> min_frequency``."""
        return dense_mask_from_frequency(self.firing_frequency, min_frequency)

    def dense_fraction(self, min_frequency: float = HIGH_FREQUENCY_THRESHOLD) -> float:
        return float(self.dense_mask(min_frequency).to(torch.float64).mean())


class LatentStatsAccumulator:
    """Streaming :class:`LatentStatistics`: firing counts, activation sums and the zero count over a window.

    ``update(codes)`` takes ``(..., n_latents)`` codes; ``reset()`` starts a new window (e.g. a dead-latent
    window of N tokens during training). Memory: two ``(n_latents,)`` vectors.
    """

    def __init__(self, n_latents: int, threshold: float = 0.0):
        if isinstance(n_latents, bool) or not isinstance(n_latents, int) or n_latents <= 0:
            raise ValueError(f"n_latents must be a positive int, got {n_latents!r}")
        if not threshold >= 0:
            raise ValueError(f"firing threshold must be >= 0, got {threshold!r}")
        self.n_latents = n_latents
        self.threshold = threshold
        self.reset()

    def reset(self) -> None:
        """Start a new window."""
        self.n_rows = 0
        self._counts: torch.Tensor | None = None
        self._sums: torch.Tensor | None = None
        self._zeros = 0

    @torch.no_grad()
    def update(self, codes: torch.Tensor) -> LatentStatsAccumulator:
        """Add a batch of codes. Raises on a width other than ``n_latents`` or NaN/Inf."""
        if isinstance(codes, torch.Tensor) and codes.ndim >= 1 and codes.shape[-1] != self.n_latents:
            raise ValueError(f"codes must have shape (..., {self.n_latents}), got {tuple(codes.shape)}")
        rows = as_rows(codes, "codes")
        self._absorb(
            n_rows=rows.shape[0],
            counts=(rows.abs() > self.threshold).sum(dim=0),
            sums=rows.sum(dim=0),
            zeros=int((rows == 0).sum().item()),
        )
        return self

    def merge(self, other: LatentStatsAccumulator) -> LatentStatsAccumulator:
        """Absorb another accumulator's window (same ``n_latents`` and ``threshold``)."""
        if (other.n_latents, other.threshold) != (self.n_latents, self.threshold):
            raise ValueError(
                "cannot merge latent statistics with different (n_latents, threshold): "
                f"{(self.n_latents, self.threshold)} vs {(other.n_latents, other.threshold)}"
            )
        if other.n_rows:
            self._absorb(other.n_rows, other._counts, other._sums, other._zeros)
        return self

    def _absorb(self, n_rows: int, counts: torch.Tensor, sums: torch.Tensor, zeros: int) -> None:
        if self._counts is None:
            self._counts = torch.zeros(self.n_latents, dtype=torch.int64, device=counts.device)
            self._sums = torch.zeros(self.n_latents, dtype=torch.float64, device=counts.device)
        self._counts += counts.to(self._counts.device)
        self._sums += sums.to(self._sums.device)
        self._zeros += zeros
        self.n_rows += n_rows

    def compute(self) -> LatentStatistics:
        """The statistics of the current window. Raises if the window is empty."""
        if self.n_rows == 0:
            raise ValueError(
                "LatentStatsAccumulator.compute() called on an empty window (no update() since reset)"
            )
        return LatentStatistics(
            n_rows=self.n_rows,
            threshold=self.threshold,
            firing_counts=self._counts.clone(),
            activation_sums=self._sums.clone(),
            zero_count=self._zeros,
        )
