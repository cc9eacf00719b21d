"""The evaluator: stream batches through an SAE and reduce them to metrics without holding codes in memory.

Reconstruction metrics come from :class:`~saebench.metrics.streaming.ReconstructionAccumulator` (computed in
the input's space), latent statistics from :class:`~saebench.metrics.streaming.LatentStatsAccumulator`; when a
ground-truth dictionary is known (planted worlds) the decoder is scored against it with MCC.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from saebench.metrics import mcc
from saebench.metrics.streaming import LatentStatsAccumulator, ReconstructionAccumulator
from saebench.sae import SAE


@torch.inference_mode()
def evaluate_sae(
    sae: SAE, batches: Iterable[torch.Tensor], true_atoms: torch.Tensor | None = None
) -> dict[str, float]:
    """Metrics of ``sae`` (put in eval mode) over ``batches`` of ``(n, d_in)`` rows.

    Returns every field of :class:`~saebench.metrics.streaming.ReconstructionMetrics` plus ``l0`` (mean count of
    non-zero codes per row), ``sparsity_fraction`` (share of exact zeros), ``dead_fraction`` (latents that never
    fired on these rows), ``dense_fraction`` and, with ``true_atoms`` ``(n_atoms, d_in)``, ``mcc``.
    """
    was_training = sae.training
    sae.eval()
    device = next(sae.parameters()).device
    reconstruction = ReconstructionAccumulator()
    latents = LatentStatsAccumulator(sae.n_latents)
    try:
        for batch in batches:
            batch = batch.to(device)
            out = sae(batch)
            reconstruction.update(batch, out.x_hat)
            latents.update(out.codes)
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
