"""saebench.metrics: pure metric functions over tensors, plus streaming accumulators.

- :mod:`~saebench.metrics.reconstruction`: MSE, normalised MSEs, FVU (dataset and per-sample), R^2 (global
  scalar mean, per batch, per-dimension mean), uncentred explained variance, cosine similarity.
- :mod:`~saebench.metrics.sparsity`: L0, sparsity fraction, firing frequency, dead and dense latents.
- :mod:`~saebench.metrics.alignment`: cosine matrices, Hungarian alignment of dictionaries, MCC.
- :mod:`~saebench.metrics.streaming`: ``ReconstructionAccumulator`` and ``LatentStatsAccumulator``.

Paper-specific definitions are in their own modules, imported from there: ``msae``, ``cknna``,
``probe_agreement``, ``naming`` (MSAE); ``universality`` (USAE); ``patch_stats``, ``patch_maps``,
``latent_masking``, ``remapping``, ``clip_splice`` (PatchSAE); ``probing`` (Equivariant SAEs).

``docs/metrics.md`` lists every formula with the paper that uses it.
"""

from __future__ import annotations

from saebench.metrics.alignment import DictionaryAlignment, cosine_matrix, hungarian_alignment, mcc
from saebench.metrics.reconstruction import (
    USAE_R2_EPS,
    cosine_similarity_mean,
    cosine_similarity_per_sample,
    explained_variance_uncentered,
    fvu_dataset,
    fvu_per_sample,
    fvu_per_sample_mean,
    mse,
    mse_normalized_by_input_norm,
    normalized_mse,
    normalized_mse_per_sample,
    r2_global_mean,
    r2_global_mean_batch_averaged,
    r2_per_dimension_mean,
)
from saebench.metrics.sparsity import (
    HIGH_FREQUENCY_THRESHOLD,
    dead_latent_fraction,
    dead_latent_mask,
    dead_mask_from_frequency,
    dense_latent_fraction,
    dense_latent_mask,
    dense_mask_from_frequency,
    firing_frequency,
    firing_mask,
    l0_count,
    sparsity_fraction,
)
from saebench.metrics.streaming import (
    LatentStatistics,
    LatentStatsAccumulator,
    ReconstructionAccumulator,
    ReconstructionMetrics,
)

__all__ = [
    "DictionaryAlignment",
    "HIGH_FREQUENCY_THRESHOLD",
    "LatentStatistics",
    "LatentStatsAccumulator",
    "ReconstructionAccumulator",
    "ReconstructionMetrics",
    "USAE_R2_EPS",
    "cosine_matrix",
    "cosine_similarity_mean",
    "cosine_similarity_per_sample",
    "dead_latent_fraction",
    "dead_latent_mask",
    "dead_mask_from_frequency",
    "dense_latent_fraction",
    "dense_latent_mask",
    "dense_mask_from_frequency",
    "explained_variance_uncentered",
    "firing_frequency",
    "firing_mask",
    "fvu_dataset",
    "fvu_per_sample",
    "fvu_per_sample_mean",
    "hungarian_alignment",
    "l0_count",
    "mcc",
    "mse",
    "mse_normalized_by_input_norm",
    "normalized_mse",
    "normalized_mse_per_sample",
    "r2_global_mean",
    "r2_global_mean_batch_averaged",
    "r2_per_dimension_mean",
    "sparsity_fraction",
]
