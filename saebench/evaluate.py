"""The evaluator: stream batches through an SAE and reduce them to metrics without holding codes in memory.

Reconstruction metrics come from :class:`~saebench.metrics.streaming.ReconstructionAccumulator` (computed in
the input's space), latent statistics from :class:`~saebench.metrics.streaming.LatentStatsAccumulator` or,
for an SAE on the sparse path (the TopK family, :mod:`saebench.sae.sparse_decode`), from the sparse codes
directly: no ``(batch, n_latents)`` codes tensor is built, and the decoder touches only the active rows.
Memory is one batch plus a few ``(d_in,)`` / ``(n_latents,)`` sums, whatever the number of rows. When a
ground-truth dictionary is known (planted worlds) the decoder is scored against it with MCC.

:func:`latent_statistics` is the encode-only variant: firing frequencies, L0 and dead latents without running
the decoder at all.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from saebench.metrics import mcc
from saebench.metrics.streaming import LatentStatistics, LatentStatsAccumulator, ReconstructionAccumulator
from saebench.sae import SAE
from saebench.sae.sparse_decode import SparseCodes, sparse_latent_totals

__all__ = ["evaluate_sae", "latent_statistics"]


class _SparseLatentWindow:
    """:class:`LatentStatsAccumulator` for :class:`SparseCodes`: the same three sums (firing counts,
    activation sums, zero count) from the stored entries, so the dense codes are never built."""

    def __init__(self, n_latents: int, threshold: float = 0.0):
        if not threshold >= 0:
            raise ValueError(f"firing threshold must be >= 0, got {threshold!r}")
        self.n_latents = n_latents
        self.threshold = threshold
        self.n_rows = 0
        self.zeros = 0
        self.counts: torch.Tensor | None = None  # (n_latents,) int64, on the codes' device
        self.sums: torch.Tensor | None = None  # (n_latents,) float64

    def update(self, codes: SparseCodes) -> None:
        counts, sums, zeros = sparse_latent_totals(codes, self.threshold)
        if self.counts is None:
            self.counts, self.sums = torch.zeros_like(counts), torch.zeros_like(sums)
        self.counts += counts
        self.sums += sums
        self.zeros += zeros
        self.n_rows += codes.n_rows

    def compute(self) -> LatentStatistics:
        counts, sums = self.counts.clone(), self.sums.clone()
        return LatentStatistics(self.n_rows, self.threshold, counts, sums, self.zeros)


def _latent_window(sae: SAE, threshold: float = 0.0) -> _SparseLatentWindow | LatentStatsAccumulator:
    """The latent-statistics accumulator for ``sae``'s codes: sparse on the sparse path, dense otherwise."""
    if sae.uses_sparse_path:
        return _SparseLatentWindow(sae.n_latents, threshold)
    return LatentStatsAccumulator(sae.n_latents, threshold)


def _device(sae: SAE) -> torch.device:
    return next(sae.parameters()).device


@torch.inference_mode()
def evaluate_sae(
    sae: SAE, batches: Iterable[torch.Tensor], true_atoms: torch.Tensor | None = None
) -> dict[str, float]:
    """Metrics of ``sae`` (put in eval mode) over ``batches`` of ``(n, d_in)`` rows.

    Returns every field of :class:`~saebench.metrics.streaming.ReconstructionMetrics` plus ``l0`` (mean count
    of non-zero codes per row), ``sparsity_fraction`` (share of exact zeros), ``dead_fraction`` (latents that
    never fired on these rows), ``dense_fraction`` and, with ``true_atoms`` ``(n_atoms, d_in)``, ``mcc``.
    """
    was_training = sae.training
    sae.eval()
    device = _device(sae)
    reconstruction = ReconstructionAccumulator()
    latents = _latent_window(sae)
    try:
        for batch in batches:
            batch = batch.to(device)
            if sae.uses_sparse_path:
                out = sae.forward_sparse(batch)
                latents.update(out.sparse_codes)
            else:
                out = sae(batch)
                latents.update(out.codes)
            reconstruction.update(batch, out.x_hat)
    finally:
        sae.train(was_training)
    if reconstruction.d is None:
        raise ValueError("evaluate_sae got no batches: give it at least one (n, d_in) tensor")
    metrics = reconstruction.compute().as_dict()
    metrics.pop("undefined")
    stats = latents.compute()
    metrics.update(
        l0=stats.l0_count,
        sparsity_fraction=stats.sparsity_fraction,
        dead_fraction=stats.dead_fraction(),
        dense_fraction=stats.dense_fraction(),
    )
    if true_atoms is not None:
        metrics["mcc"] = mcc(sae.W_dec.detach().cpu(), true_atoms.cpu())
    return metrics


@torch.inference_mode()
def latent_statistics(sae: SAE, batches: Iterable[torch.Tensor], threshold: float = 0.0) -> LatentStatistics:
    """Encode-only: latent usage of ``sae`` (put in eval mode) over ``batches`` of ``(..., d_in)`` rows, with
    a latent firing where ``|z| > threshold``. The decoder never runs; on the sparse path neither does the
    dense scatter of the codes (:meth:`~saebench.sae.base.SAE.encode_sparse`)."""
    was_training = sae.training
    sae.eval()
    device = _device(sae)
    latents = _latent_window(sae, threshold)
    try:
        for batch in batches:
            batch = batch.to(device)
            latents.update(sae.encode_sparse(batch) if sae.uses_sparse_path else sae.encode(batch))
    finally:
        sae.train(was_training)
    if latents.n_rows == 0:
        raise ValueError("latent_statistics got no batches: give it at least one (n, d_in) tensor")
    return latents.compute()
