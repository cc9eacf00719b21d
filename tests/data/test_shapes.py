"""The Shapes world: determinism, labels that match the pixels, and C4 rotations that map labels as the
symmetry says."""

from __future__ import annotations

import pytest
import torch

from saebench.data.shapes import (
    FACTORS,
    GROUP_ORDER,
    PALETTE,
    ShapesConfig,
    ShapesWorld,
    orbit_images,
    orbit_labels,
    render,
    rotate_images,
    rotate_labels,
)

CONFIG = ShapesConfig(image_size=16, n_samples=64, radii=(2, 4), seed=3)


@pytest.fixture(scope="module")
def world() -> ShapesWorld:
    return ShapesWorld(CONFIG)


def test_deterministic_by_seed(world):
    again = ShapesWorld(CONFIG)
    assert torch.equal(again.images, world.images)
    other = ShapesWorld(ShapesConfig(image_size=16, n_samples=64, radii=(2, 4), seed=4))
    assert not torch.equal(other.images, world.images)


def test_labels_cover_every_factor_in_range(world):
    assert set(world.labels) == set(FACTORS)
    for factor, n_values in world.n_values.items():
        values = world.labels[factor]
        assert values.shape == (64,) and values.dtype == torch.int64
        assert 0 <= int(values.min()) and int(values.max()) < n_values


def test_pixels_match_the_labels(world):
    images = world.images
    assert images.shape == (64, 3, 16, 16)
    for i in range(8):
        row, col = int(world.labels["row"][i]), int(world.labels["col"][i])
        lit_mask = images[i].sum(0) > 0
        # every lit pixel has the label's palette colour; the background is black
        colour = torch.tensor(PALETTE[int(world.labels["colour"][i])])
        assert lit_mask.any()
        assert torch.equal(images[i][:, lit_mask], colour[:, None].expand(3, int(lit_mask.sum())))
        lit = lit_mask.nonzero().float()
        # the shape stays within its radius (+ the square/triangle's integer corners) of the centre
        radius = CONFIG.radii[int(world.labels["size"][i])]
        assert (lit - torch.tensor([row, col])).abs().max() <= radius


def test_rotation_maps_labels_as_the_symmetry_says(world):
    """rot90 of every image equals the image drawn from the rotated labels: orientation + 1, centre
    (r, c) -> (S - 1 - c, r), quadrant - 1 (mod 4), shape/colour/size unchanged."""
    for turns in range(1, GROUP_ORDER + 1):
        rotated = rotate_labels(world.labels, 16, turns)
        assert torch.equal(render(rotated, CONFIG), rotate_images(world.images, turns))
    one = rotate_labels(world.labels, 16, 1)
    assert torch.equal(one["orientation"], (world.labels["orientation"] + 1) % 4)
    assert torch.equal(one["row"], 15 - world.labels["col"])
    assert torch.equal(one["col"], world.labels["row"])
    assert torch.equal(one["quadrant"], (world.labels["quadrant"] - 1) % 4)
    for invariant in ("shape", "colour", "size"):
        assert torch.equal(one[invariant], world.labels[invariant])
    # four turns are the identity
    full_turn = rotate_labels(world.labels, 16, 4)
    assert all(torch.equal(full_turn[k], world.labels[k]) for k in FACTORS)


def test_quadrant_by_hand():
    # S = 16: middle 7.5. (2, 3) top-left -> 0; (2, 12) top-right -> 1; (12, 12) -> 2; (12, 3) -> 3.
    labels = {
        "shape": torch.tensor([2, 2, 2, 2]),
        "colour": torch.zeros(4, dtype=torch.long),
        "size": torch.zeros(4, dtype=torch.long),
        "orientation": torch.zeros(4, dtype=torch.long),
        "row": torch.tensor([3, 3, 12, 12]),
        "col": torch.tensor([3, 12, 12, 3]),
    }
    world = ShapesWorld(CONFIG)
    world_quadrant = world.labels["quadrant"][(world.labels["row"] < 7.5) & (world.labels["col"] < 7.5)]
    assert (world_quadrant == 0).all()
    rotated = rotate_labels({**labels, "quadrant": torch.tensor([0, 1, 2, 3])}, 16, 1)
    # top-left (3, 3) -> (12, 3): bottom-left, 3
    assert rotated["quadrant"].tolist() == [3, 0, 1, 2]
    assert rotated["row"].tolist() == [12, 3, 3, 12] and rotated["col"].tolist() == [3, 3, 12, 12]


def test_orbits(world):
    images, labels = world.orbits()
    assert images.shape == (64, 4, 3, 16, 16)
    assert torch.equal(images[:, 2], rotate_images(world.images, 2))
    assert torch.equal(labels["orientation"][:, 3], (world.labels["orientation"] + 3) % 4)
    assert torch.equal(orbit_images(world.images)[:, 0], world.images)
    assert orbit_labels(world.labels, 16)["shape"].shape == (64, 4)


def test_orientation_is_visible_for_asymmetric_shapes():
    """A triangle's four orientations are four different images; a square's are one image."""
    base = {
        "colour": torch.zeros(4, dtype=torch.long),
        "size": torch.ones(4, dtype=torch.long),
        "orientation": torch.arange(4),
        "row": torch.full((4,), 8),
        "col": torch.full((4,), 8),
    }
    triangles = render({**base, "shape": torch.full((4,), 2)}, CONFIG)
    squares = render({**base, "shape": torch.full((4,), 1)}, CONFIG)
    assert all(not torch.equal(triangles[i], triangles[j]) for i in range(4) for j in range(i + 1, 4))
    assert all(torch.equal(squares[0], squares[i]) for i in range(4))


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"image_size": 8, "radii": (4,)}, "too small"),
        ({"radii": (1,)}, "radii"),
        ({"n_samples": 0}, "n_samples"),
    ],
)
def test_bad_config(fields, message):
    with pytest.raises(ValueError, match=message):
        ShapesConfig(**fields)
