"""The patch world: seed-determinism, token layout, and tokens that match their planted masks exactly."""

from __future__ import annotations

import pytest
import torch

from saebench.data.patch_world import PatchWorld, PatchWorldConfig


def test_same_seed_and_stream_give_identical_samples():
    config = PatchWorldConfig(seed=3)
    a, b = PatchWorld(config).sample(5, stream=1), PatchWorld(config).sample(5, stream=1)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not torch.equal(a.tokens, PatchWorld(config).sample(5, stream=2).tokens)
    assert not torch.equal(a.tokens, PatchWorld(PatchWorldConfig(seed=4)).sample(5, stream=1).tokens)


def test_shapes_layout_and_masks():
    world = PatchWorld(
        PatchWorldConfig(d=16, grid=(4, 5), n_concepts=3, concepts_per_image=2, region_size=(1, 2))
    )
    sample = world.sample(50)
    assert sample.tokens.shape == (50, 21, 16) and world.layout.n_tokens == 21
    assert sample.masks.shape == (50, 3, 4, 5)
    assert torch.equal(sample.present.sum(dim=1), torch.full((50,), 2))
    area = sample.masks.flatten(2).sum(dim=2)[sample.present]
    assert area.min() >= 1 and area.max() <= 4  # rectangles of side 1..2
    assert torch.equal(sample.present[torch.arange(50), sample.labels], torch.ones(50, dtype=torch.bool))


def test_noise_free_tokens_are_background_plus_planted_concepts():
    config = PatchWorldConfig(
        d=8, grid=(3, 3), n_concepts=2, concepts_per_image=1, region_size=(1, 2), noise_std=0.0
    )
    world = PatchWorld(config)
    sample = world.sample(20)
    directions = torch.cat([world.background_direction[None], world.concept_directions])
    assert torch.allclose(directions @ directions.T, torch.eye(3), atol=1e-6)  # orthonormal
    patches = sample.tokens[:, 1:]  # (n, 9, d)
    projection = patches @ world.concept_directions.T  # (n, 9, n_concepts)
    inside = sample.masks.flatten(2).transpose(1, 2)
    # a concept's projection is its amplitude (1..2) inside its rectangle and 0 elsewhere
    assert torch.all(projection[inside] >= 1.0 - 1e-5) and torch.all(projection[inside] <= 2.0 + 1e-5)
    assert torch.allclose(projection[~inside], torch.zeros(()), atol=1e-5)
    # the CLS token carries the mean of the planted patch contributions
    cls_projection = sample.tokens[:, 0] @ world.concept_directions.T
    assert torch.allclose(cls_projection, projection.mean(dim=1), atol=1e-5)


def test_bad_configs_are_named():
    with pytest.raises(ValueError, match="must exceed n_concepts"):
        PatchWorldConfig(d=4, n_concepts=4)
    with pytest.raises(ValueError, match="region_size"):
        PatchWorldConfig(grid=(3, 3), region_size=(2, 4))
