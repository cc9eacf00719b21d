"""Figures of a Universal SAE's universality metrics (Thasarathan et al. 2025; ``papers/usae.md`` §2):

- :func:`plot_r2_matrix`: the cross-model R^2 matrix, encoder ``i`` (rows) -> dictionary ``j`` (columns), as
  Fig. 5 and the authors' ``plot_reconstruction_matrix``;
- :func:`plot_firing_entropy_histogram`: the histogram of concept firing entropies (Fig. 6a);
- :func:`plot_cofire_proportion_by_rank`: each model's co-fire proportion of every concept, concepts ordered
  by energy, highest first (Fig. 6b).

Each writes one PNG (no timestamp in its metadata, so a re-run with the same data gives the same bytes) and
returns its path.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = ["plot_r2_matrix", "plot_firing_entropy_histogram", "plot_cofire_proportion_by_rank"]


def _save(figure: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, format="png", dpi=100, metadata={"Software": None})
    return path


def _figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height))
    FigureCanvasAgg(figure)
    return figure


def plot_r2_matrix(table: torch.Tensor, models: Sequence[str], path: str | Path, title: str = "") -> Path:
    """Heat map of ``table (M, M)``, rows = encoder (source model), columns = dictionary (target model),
    each cell labelled with its value."""
    values = np.asarray(torch.as_tensor(table, dtype=torch.float64))
    if values.ndim != 2 or values.shape != (len(models), len(models)):
        raise ValueError(f"table must be (M, M) with M = {len(models)} models, got shape {values.shape}")
    figure = _figure(1.6 + 1.3 * len(models), 1.2 + 1.2 * len(models))
    axis = figure.add_subplot()
    image = axis.imshow(values, cmap="viridis", vmin=min(0.0, float(np.nanmin(values))), vmax=1.0)
    for i in range(len(models)):
        for j in range(len(models)):
            bright = values[i, j] > 0.6
            axis.text(
                j, i, f"{values[i, j]:.2f}", ha="center", va="center", color="black" if bright else "white"
            )
    axis.set_xticks(range(len(models)), models, rotation=30, ha="right")
    axis.set_yticks(range(len(models)), models)
    axis.set_xlabel("decoder (reconstructed model)")
    axis.set_ylabel("encoder (source model)")
    axis.set_title(title or "cross-model R²")
    figure.colorbar(image, ax=axis, fraction=0.046)
    return _save(figure, path)


def plot_firing_entropy_histogram(
    entropy: torch.Tensor, path: str | Path, n_models: int, bins: int = 20, title: str = ""
) -> Path:
    """Histogram of firing entropies ``(n,)`` in ``[0, 1]``, with dashed lines at the values of a concept
    firing equally in ``r`` of ``n_models`` models (``log r / log M``: 0, 0.631 and 1 for three models)."""
    values = np.asarray(torch.as_tensor(entropy, dtype=torch.float64)).reshape(-1)
    if values.size == 0:
        raise ValueError("no firing entropies to plot (did any concept fire?)")
    figure = _figure(5.0, 3.2)
    axis = figure.add_subplot()
    axis.hist(values, bins=bins, range=(0.0, 1.0), color="tab:blue", edgecolor="white")
    for r in range(1, n_models + 1):
        axis.axvline(np.log(r) / np.log(n_models), color="grey", linestyle="--", linewidth=0.8)
    axis.set_xlabel("firing entropy")
    axis.set_ylabel("concepts")
    axis.set_title(title or f"firing entropy of {values.size} concepts")
    return _save(figure, path)


def plot_cofire_proportion_by_rank(
    proportion: torch.Tensor, order: torch.Tensor, models: Sequence[str], path: str | Path, title: str = ""
) -> Path:
    """One line per model: ``proportion (M, m)`` of the concepts in ``order`` (indices, highest energy first)
    against their energy rank."""
    values = np.asarray(torch.as_tensor(proportion, dtype=torch.float64))
    index = np.asarray(torch.as_tensor(order, dtype=torch.int64))
    if values.ndim != 2 or values.shape[0] != len(models):
        raise ValueError(f"proportion must be (M={len(models)}, m), got shape {values.shape}")
    if index.ndim != 1 or index.size == 0 or index.min() < 0 or index.max() >= values.shape[1]:
        raise ValueError(f"order must be a non-empty list of concept indices in [0, {values.shape[1]})")
    figure = _figure(5.5, 3.2)
    axis = figure.add_subplot()
    for name, row in zip(models, values, strict=True):
        axis.plot(np.arange(1, index.size + 1), row[index], linewidth=0.9, label=name)
    axis.set_xlabel("concept rank by energy")
    axis.set_ylabel("co-fire proportion")
    axis.set_ylim(0.0, 1.02)
    axis.legend(fontsize="small")
    axis.set_title(title or "co-fire proportion by energy rank")
    return _save(figure, path)
