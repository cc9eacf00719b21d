"""The toy multi-model world: concept groups, aligned batches, scalar standardisation, determinism."""

from __future__ import annotations

import pytest
import torch

from saebench.data.multimodel import (
    MultiModelWorld,
    MultiModelWorldConfig,
    resize_token_grid,
    scalar_standardization_stats,
    scalar_standardize,
)

DIMS = {"a": 12, "b": 10, "c": 8}


@pytest.fixture
def world() -> MultiModelWorld:
    return MultiModelWorld(
        MultiModelWorldConfig(DIMS, n_universal=3, n_shared_per_pair=2, n_private_per_model=1, k=2, seed=4)
    )


def test_groups_and_owners(world):
    # 3 universal + 3 pairs x 2 shared + 3 x 1 private = 12 concepts.
    assert world.n_concepts == 12
    assert world.groups["universal"].tolist() == [0, 1, 2]
    assert world.groups["shared"].tolist() == [3, 4, 5, 6, 7, 8]
    assert world.groups["private"].tolist() == [9, 10, 11]
    assert world.owners[3] == ("a", "b") and world.owners[7] == ("b", "c") and world.owners[11] == ("c",)
    # model a sees the 3 universal, its 2 pairs x 2 shared and its 1 private concept.
    assert world.concepts_of["a"].tolist() == [0, 1, 2, 3, 4, 5, 6, 9]


def test_activations_are_codes_through_each_models_map(world):
    s = world._raw(5, torch.Generator().manual_seed(0))
    for name in DIMS:
        expected = s.codes @ world.true_atoms(name)
        assert (s.x[name] - expected).abs().max() < 0.1  # noise_std 0.01: 10 standard deviations
    assert ((s.codes > 0).sum(dim=1) == 2).all()
    atoms = world.true_atoms("c")
    assert atoms[world.concepts_of["c"]].norm(dim=1).allclose(torch.ones(len(world.concepts_of["c"])))
    assert atoms[3].abs().sum() == 0  # concept 3 is a-b only: absent from c


def test_batches_are_aligned_standardised_and_deterministic(world):
    first = list(world.batches(256, 2))
    again = list(world.batches(256, 2))
    for b, b2 in zip(first, again, strict=True):
        assert set(b) == set(DIMS)
        for name, d in DIMS.items():
            assert b[name].shape == (256, d)
            assert torch.equal(b[name], b2[name])
    assert not torch.equal(first[0]["a"], first[1]["a"])
    # The stats come from 8192 other rows: mean within 0.05 of 0 and std within 10% of 1 on 3,072 entries.
    x = torch.cat([b["a"] for b in first])
    assert abs(x.mean().item()) < 0.05
    assert x.std().item() == pytest.approx(1.0, rel=0.1)


def test_scalar_standardisation_by_hand():
    x = torch.tensor([[1.0, 3.0], [5.0, 7.0]])
    mean, std = scalar_standardization_stats(x)
    assert mean == 4.0
    assert std == pytest.approx(5.0**0.5)  # population variance ((9 + 1 + 1 + 9) / 4) = 5
    z = scalar_standardize(x, mean, std)
    assert z[0, 0].item() == pytest.approx(-3.0 / (5.0**0.5 + 1e-5))


def test_bad_configs_are_named():
    with pytest.raises(ValueError, match="at least 2 models"):
        MultiModelWorldConfig({"a": 4})
    with pytest.raises(ValueError, match="k must"):
        MultiModelWorldConfig(DIMS, n_universal=1, n_shared_per_pair=0, n_private_per_model=0, k=2)


def test_resize_token_grid_16_to_14():
    # A constant grid stays constant; a 2 x 2 grid with a linear ramp shrinks to its mean at 1 x 1.
    tokens = torch.full((2, 256, 3), 0.5)
    out = resize_token_grid(tokens, 14)
    assert out.shape == (2, 196, 3)
    torch.testing.assert_close(out, torch.full((2, 196, 3), 0.5))
    ramp = torch.tensor([[[0.0], [1.0], [2.0], [3.0]]])  # row-major 2 x 2 grid
    assert resize_token_grid(ramp, 1).item() == pytest.approx(1.5)  # antialiased: the average of all four
    # Token order is row-major: the left column (tokens 0, 2) stays left after a 2 x 2 -> 2 x 2 resize.
    torch.testing.assert_close(resize_token_grid(ramp, 2), ramp)
    with pytest.raises(ValueError, match="square grid"):
        resize_token_grid(torch.zeros(1, 257, 3), 14)
