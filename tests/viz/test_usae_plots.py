"""USAE figures (saebench.viz.usae_plots): PNGs are written, re-runs give the same bytes, bad input is
refused."""

from __future__ import annotations

import pytest
import torch

from saebench.viz.usae_plots import (
    plot_cofire_proportion_by_rank,
    plot_firing_entropy_histogram,
    plot_r2_matrix,
)

PNG = b"\x89PNG\r\n\x1a\n"
MODELS = ["A", "B", "C"]


def test_r2_matrix_png_is_deterministic(tmp_path):
    table = torch.tensor([[0.8, 0.3, 0.2], [0.25, 0.7, 0.1], [0.3, 0.2, 0.9]])
    first = plot_r2_matrix(table, MODELS, tmp_path / "a.png").read_bytes()
    second = plot_r2_matrix(table, MODELS, tmp_path / "b.png").read_bytes()
    assert first[:8] == PNG and first == second


def test_firing_entropy_histogram_and_cofire_by_rank(tmp_path):
    entropy = torch.tensor([0.0, 0.631, 1.0, 0.98, 0.5])
    path = plot_firing_entropy_histogram(entropy, tmp_path / "sub" / "fe.png", n_models=3)
    assert path.read_bytes()[:8] == PNG
    proportion = torch.rand(3, 10, generator=torch.Generator().manual_seed(0))
    path = plot_cofire_proportion_by_rank(proportion, torch.tensor([3, 1, 2]), MODELS, tmp_path / "cfp.png")
    assert path.read_bytes()[:8] == PNG


def test_bad_shapes_are_refused(tmp_path):
    with pytest.raises(ValueError, match=r"\(M, M\) with M = 3"):
        plot_r2_matrix(torch.zeros(2, 2), MODELS, tmp_path / "x.png")
    with pytest.raises(ValueError, match="no firing entropies"):
        plot_firing_entropy_histogram(torch.zeros(0), tmp_path / "x.png", n_models=3)
    with pytest.raises(ValueError, match=r"concept indices in \[0, 4\)"):
        plot_cofire_proportion_by_rank(torch.zeros(3, 4), torch.tensor([4]), MODELS, tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"\(M=3, m\)"):
        plot_cofire_proportion_by_rank(torch.zeros(2, 4), torch.tensor([0]), MODELS, tmp_path / "x.png")
