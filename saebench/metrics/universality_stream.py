"""Streaming universality metrics of a Universal SAE over held-out aligned batches (Thasarathan et al. 2025,
§4; definitions: ``papers/usae.md`` §2.1).

The full tier evaluates 5,000 ImageNet-val images x 196 tokens, whose codes (980,000 x 6,144 per model) do
not fit in memory, so the counts the paper's metrics are built from are accumulated batch by batch, as the
authors' analysis does (``uni_analysis.py``: batches of 100 images). The per-concept metrics are then the
pure functions of :mod:`saebench.metrics.universality` applied to the accumulated counts:

- R^2 and MSE matrices ``[i, j]`` (encoder ``i`` -> dictionary ``j``), eval mode, each batch's value
  averaged over batches unweighted (the authors' per-batch average; :func:`r2_global_mean` and, for the
  stricter variant, :func:`r2_per_dimension_mean`);
- fire counts ``|F_k^(i)|`` at ``tau`` and at 0 (for dead concepts before / after ``tau``), co-fire counts
  ``|C_k|`` (Eq. 11);
- per-model mean codes, from which the energy (Eq. 9, :func:`concept_energy`) is computed: the energy only
  reads ``E_x[Z_k]``, so the mean code of all rows is all it needs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from saebench.metrics.reconstruction import mse, r2_global_mean, r2_per_dimension_mean
from saebench.metrics.universality import (
    FIRING_THRESHOLD,
    cofire_counts,
    cofire_proportion,
    concept_energy,
    fire_counts,
    firing_entropy,
)
from saebench.sae.universal import UniversalSAE

__all__ = ["UniversalityReport", "UniversalityAccumulator"]


@dataclass(frozen=True)
class UniversalityReport:
    """Accumulated universality statistics; ``M`` models (in ``models`` order), ``m`` concepts.

    r2, r2_per_dimension, mse: ``(M, M)`` float64, batch-averaged. fires: ``(M, m)`` counts of rows with
    code ``> threshold``; active: ``(M, m)`` counts of rows with code ``> 0``. cofires: ``(m,)``. energy:
    ``(M, m)`` the code's non-squared energy per model. n_rows, n_batches: what was accumulated.
    """

    models: tuple[str, ...]
    threshold: float
    r2: torch.Tensor
    r2_per_dimension: torch.Tensor
    mse: torch.Tensor
    fires: torch.Tensor
    active: torch.Tensor
    cofires: torch.Tensor
    energy: torch.Tensor
    n_rows: int
    n_batches: int

    @property
    def firing_entropy(self) -> torch.Tensor:
        """``(m,)`` Eq. 12-13 from the fire counts."""
        return firing_entropy(self.fires)

    @property
    def cofire_proportion(self) -> torch.Tensor:
        """``(M, m)`` Eq. 14."""
        return cofire_proportion(self.cofires, self.fires)

    @property
    def energy_aggregate(self) -> torch.Tensor:
        """``(m,)`` energy summed over models (the code's ``energies_agg``; Fig. 6c plots it / M)."""
        return self.energy.sum(dim=0)

    @property
    def dead_fraction(self) -> torch.Tensor:
        """``(M,)`` share of concepts never ``> 0`` on any row (as :func:`dead_concept_fractions`)."""
        return self.active.eq(0).double().mean(dim=1)

    @property
    def dead_fraction_after_threshold(self) -> torch.Tensor:
        """``(M,)`` share of concepts never ``> threshold``."""
        return self.fires.eq(0).double().mean(dim=1)


class UniversalityAccumulator:
    """Feed aligned held-out batches ``{model: (n, d_model)}`` (standardised, as in training) to
    :meth:`update`; :meth:`report` returns the :class:`UniversalityReport`. The USAE is evaluated in eval
    mode (BatchNorm running statistics) and its mode is restored after each batch."""

    def __init__(self, usae: UniversalSAE, threshold: float = FIRING_THRESHOLD):
        self.usae = usae
        self.threshold = float(threshold)
        models, m = usae.models, usae.config.n_latents
        size = (len(models), len(models))
        self._r2 = torch.zeros(size, dtype=torch.float64)
        self._r2_pd = torch.zeros(size, dtype=torch.float64)
        self._mse = torch.zeros(size, dtype=torch.float64)
        self._fires = torch.zeros(len(models), m, dtype=torch.int64)
        self._active = torch.zeros(len(models), m, dtype=torch.int64)
        self._cofires = torch.zeros(m, dtype=torch.int64)
        self._code_sums = torch.zeros(len(models), m, dtype=torch.float64)
        self._rows = 0
        self._batches = 0

    @torch.no_grad()
    def update(self, x: Mapping[str, torch.Tensor]) -> None:
        models = self.usae.models
        if set(x) != set(models):
            raise ValueError(f"a batch needs one tensor per model {list(models)}, got {sorted(x)}")
        rows = {name: t.shape[0] for name, t in x.items()}
        if len(set(rows.values())) != 1 or 0 in rows.values():
            raise ValueError(f"batch rows must be aligned and non-empty, got {rows}")
        was_training = self.usae.training
        self.usae.eval()
        try:
            outputs = [self.usae(i, x[i]) for i in models]
        finally:
            self.usae.train(was_training)
        for a, out in enumerate(outputs):
            for b, j in enumerate(models):
                target, x_hat = x[j].detach().cpu(), out.x_hat[j].cpu()
                self._r2[a, b] += r2_global_mean(target, x_hat)
                self._r2_pd[a, b] += r2_per_dimension_mean(target, x_hat)
                self._mse[a, b] += mse(target, x_hat)
        codes = [out.codes.cpu() for out in outputs]
        for a, c in enumerate(codes):
            self._fires[a] += fire_counts(c, self.threshold)
            self._active[a] += fire_counts(c, 0.0)
            self._code_sums[a] += c.to(torch.float64).sum(dim=0)
        self._cofires += cofire_counts(codes, self.threshold)
        self._rows += next(iter(rows.values()))
        self._batches += 1

    def report(self) -> UniversalityReport:
        if self._batches == 0:
            raise ValueError("no batch was accumulated; call update() with held-out batches first")
        mean_codes = self._code_sums / self._rows
        energy = torch.stack(
            [
                concept_energy(mean_codes[a : a + 1], self.usae.dictionary(name).detach().cpu())
                for a, name in enumerate(self.usae.models)
            ]
        )
        return UniversalityReport(
            models=self.usae.models,
            threshold=self.threshold,
            r2=self._r2 / self._batches,
            r2_per_dimension=self._r2_pd / self._batches,
            mse=self._mse / self._batches,
            fires=self._fires.clone(),
            active=self._active.clone(),
            cofires=self._cofires.clone(),
            energy=energy,
            n_rows=self._rows,
            n_batches=self._batches,
        )
