"""Geometric median by Weiszfeld iterations, including estimates that land on a data point."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from saebench.sae import create_sae
from saebench.sae.init import geometric_median, kaiming_uniform_encoder_


def _sum_of_distances(points: torch.Tensor, y: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm(points.double() - y.double(), dim=1).sum())


def test_collinear_points_give_the_middle_point():
    """On a line the geometric median is the ordinary median: of 0, 1, 2, 3, 100 it is 2, a data point.
    The start (the mean, 21.2) is far from it; the iterates approach a point where a weight 1/||x_i - y||
    diverges."""
    points = torch.tensor([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0], [3.0, 0.0], [100.0, 0.0]])
    y = geometric_median(points)
    assert torch.isfinite(y).all()
    # 1e-4: Weiszfeld converges only linearly towards a median that sits on a data point
    torch.testing.assert_close(y, torch.tensor([2.0, 0.0]), rtol=0, atol=1e-4)


def test_start_on_a_data_point_that_is_the_median():
    """Square corners plus the centre: the mean (the start) is the centre, a data point, and the median
    (the unit vectors to the four corners sum to 0, so r = 0 <= eta = 1). Plain Weiszfeld divides by 0."""
    points = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0], [0.0, 0.0]])
    assert torch.equal(geometric_median(points), torch.zeros(2))


def test_start_on_a_data_point_that_is_not_the_median():
    """1-D points 0, 1, 1, 1, -3: the mean 0 is a data point, the median is 1. At y = 0 the other points pull
    with unit vectors 1 + 1 + 1 - 1 = 2 > eta = 1, so the iteration must leave the data point."""
    points = torch.tensor([[0.0], [1.0], [1.0], [1.0], [-3.0]])
    torch.testing.assert_close(geometric_median(points), torch.tensor([1.0]), rtol=0, atol=1e-4)


def test_identical_points_and_a_single_point():
    point = torch.tensor([[0.5, -2.0, 3.0]])
    assert torch.equal(geometric_median(point), point[0])
    assert torch.equal(geometric_median(point.repeat(7, 1)), point[0])


def test_minimises_the_sum_of_distances_against_scipy():
    gen = torch.Generator().manual_seed(0)
    points = torch.randn(300, 6, generator=gen, dtype=torch.float64)
    points[:30] += 20.0  # a cluster of outliers
    y = geometric_median(points, max_iter=500, tol=1e-10)
    reference = minimize(lambda v: _sum_of_distances(points, torch.from_numpy(v)), points.mean(0).numpy(),
                         method="Nelder-Mead", options={"xatol": 1e-10, "fatol": 1e-10, "maxiter": 20000})
    ours, theirs = _sum_of_distances(points, y), float(reference.fun)
    assert ours <= theirs * (1 + 1e-9)  # at least as good as a generic optimiser, to its own precision
    # optimality: the unit vectors from the median to the points sum to ~0 (no data point coincides)
    units = (points - y) / torch.linalg.vector_norm(points - y, dim=1, keepdim=True)
    assert float(torch.linalg.vector_norm(units.sum(0))) < 1e-6 * len(points)


def test_robust_to_outliers_unlike_the_mean():
    points = torch.randn(500, 4, generator=torch.Generator().manual_seed(1))
    points[:25] += 1000.0
    assert float(torch.linalg.vector_norm(geometric_median(points))) < 0.5
    assert float(torch.linalg.vector_norm(points.mean(0))) > 50


def test_half_precision_input_keeps_its_dtype():
    points = torch.randn(50, 3, generator=torch.Generator().manual_seed(2))
    y = geometric_median(points.to(torch.bfloat16))
    assert y.dtype == torch.bfloat16
    # 0.05: bfloat16 keeps ~2-3 significant digits of values of size ~1
    np.testing.assert_allclose(y.float().numpy(), geometric_median(points).numpy(), atol=0.05)


@pytest.mark.parametrize("bad", [torch.zeros(0, 3), torch.zeros(5), torch.tensor([[0.0, float("nan")]])])
def test_bad_points(bad):
    with pytest.raises(ValueError, match="geometric_median"):
        geometric_median(bad)


def test_kaiming_uniform_encoder_bound_uses_the_latent_fan_in():
    sae = create_sae("relu", d_in=8, n_latents=96)
    kaiming_uniform_encoder_(sae)
    bound = (6 / 96) ** 0.5  # gain sqrt(2) * sqrt(3 / fan_in), fan_in = n_latents = 96: 0.25
    assert sae.W_enc.abs().max() <= bound and sae.W_enc.abs().max() > 0.9 * bound  # 768 uniform draws
    assert not torch.allclose(sae.W_enc, sae.W_dec.t())
    with pytest.raises(ValueError, match="tied SAE"):
        kaiming_uniform_encoder_(create_sae("relu", d_in=8, n_latents=96, tied=True))
