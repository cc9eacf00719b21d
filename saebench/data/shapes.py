"""The Shapes world with C4 symmetry: procedurally drawn shape images with known factors, closed under 90°
rotations.

Erdogan & Lucic (arXiv:2511.09432) train autoencoders on synthetic shape images with 90° rotational symmetry
(``--orbit-size 4``); their generator was not available to us (``shared/papers/equivariant.md`` §5.1), so
this one is our design (``reproductions/equivariant_sae/NOTES.md``). One filled shape on a black
``image_size x image_size`` RGB canvas, with factors (``FACTORS``, every one an integer label):

* ``shape``: index into ``SHAPES`` = circle, square (both C4-invariant masks), triangle (apex up at
  orientation 0), ell (an L: bars along the left and bottom edges at orientation 0);
* ``colour``: index into ``PALETTE`` (fill colour); ``size``: index into ``ShapesConfig.radii``;
* ``orientation``: the shape's pose, rotated by ``orientation * 90°`` counter-clockwise;
* ``row``, ``col``: the integer pixel of the shape's centre; ``quadrant``: 0 top-left, 1 top-right,
  2 bottom-right, 3 bottom-left (clockwise; the canvas middle is a half-pixel, so there are no ties).

The group action is ``rot90`` of the pixel grid, counter-clockwise (``torch.rot90(image, 1, (-2, -1))``).
Pixel ``(r, c)`` moves to ``(S - 1 - c, r)``, so the labels of a rotated image are
(:func:`rotate_labels`): ``orientation + 1 mod 4``, ``(row, col) -> (S - 1 - col, row)``,
``quadrant - 1 mod 4``; shape, colour and size are invariant. Masks are evaluated on integer offsets from an
integer centre, so ``render(rotate_labels(f)) == rot90(render(f))`` holds exactly (tested). Deterministic by
seed; 10,000 samples by default (README ``--n-samples``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = [
    "SHAPES",
    "PALETTE",
    "FACTORS",
    "GROUP_ORDER",
    "ShapesConfig",
    "ShapesWorld",
    "rotate_images",
    "rotate_labels",
    "orbit_images",
    "orbit_labels",
    "render",
]

SHAPES = ("circle", "square", "triangle", "ell")
PALETTE = ((1.0, 0.2, 0.2), (0.2, 1.0, 0.2), (0.3, 0.4, 1.0), (1.0, 1.0, 0.2))  # red, green, blue, yellow
FACTORS = ("shape", "colour", "size", "orientation", "row", "col", "quadrant")
GROUP_ORDER = 4  # C4


@dataclass(frozen=True)
class ShapesConfig:
    """image_size: canvas side ``S`` in pixels. n_samples: images in the world. radii: shape half-widths in
    pixels, one per ``size`` label. seed: every label draw."""

    image_size: int = 32
    n_samples: int = 10_000
    radii: tuple[int, ...] = (4, 7)
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "radii", tuple(int(r) for r in self.radii))
        if not self.radii or min(self.radii) < 2:
            raise ValueError(f"radii must be a non-empty tuple of ints >= 2, got {self.radii}")
        if self.image_size < 2 * max(self.radii) + 3:
            raise ValueError(
                f"image_size {self.image_size} is too small for radius {max(self.radii)}: "
                f"it needs at least {2 * max(self.radii) + 3} pixels"
            )
        if self.n_samples <= 0:
            raise ValueError(f"n_samples must be positive, got {self.n_samples}")


def _base_mask(shape: int, dy: torch.Tensor, dx: torch.Tensor, radius: float) -> torch.Tensor:
    """Orientation-0 mask on offsets ``dy`` (down) / ``dx`` (right) from the centre, bool."""
    r = radius
    if shape == 0:  # circle
        return dy**2 + dx**2 <= r**2
    if shape == 1:  # square
        return (dy.abs() <= 0.75 * r) & (dx.abs() <= 0.75 * r)
    if shape == 2:  # triangle, apex up (dy = -r), base at dy = +r
        return (dy >= -r) & (dy <= r) & (2 * dx.abs() <= dy + r)
    inside = (dy.abs() <= r) & (dx.abs() <= r)  # ell: left bar and bottom bar
    return inside & ((dx <= -r / 3) | (dy >= r / 3))


def _unrotate(dy: torch.Tensor, dx: torch.Tensor, turns: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply ``R^-turns`` where ``R: (dy, dx) -> (-dx, dy)`` is the offset map of one CCW ``rot90``."""
    for _ in range(turns % GROUP_ORDER):
        dy, dx = dx, -dy
    return dy, dx


def _quadrant(row: torch.Tensor, col: torch.Tensor, image_size: int) -> torch.Tensor:
    middle = (image_size - 1) / 2
    top, left = row < middle, col < middle
    return torch.where(top, torch.where(left, 0, 1), torch.where(left, 3, 2)).long()


def rotate_labels(
    labels: dict[str, torch.Tensor], image_size: int, turns: int = 1
) -> dict[str, torch.Tensor]:
    """Labels of the images rotated by ``turns * 90°`` CCW (see the module docstring)."""
    out = {k: v.clone() for k, v in labels.items()}
    for _ in range(turns % GROUP_ORDER):
        out["row"], out["col"] = image_size - 1 - out["col"], out["row"].clone()
        out["orientation"] = (out["orientation"] + 1) % GROUP_ORDER
        out["quadrant"] = (out["quadrant"] - 1) % GROUP_ORDER
    return out


def rotate_images(images: torch.Tensor, turns: int = 1) -> torch.Tensor:
    """``(..., C, S, S)`` images rotated by ``turns * 90°`` counter-clockwise (the C4 group action)."""
    return torch.rot90(images, turns, dims=(-2, -1))


def orbit_images(images: torch.Tensor) -> torch.Tensor:
    """``(n, C, S, S) -> (n, 4, C, S, S)``: member ``p`` is the image rotated ``p`` times."""
    return torch.stack([rotate_images(images, p) for p in range(GROUP_ORDER)], dim=1)


def orbit_labels(labels: dict[str, torch.Tensor], image_size: int) -> dict[str, torch.Tensor]:
    """``(n,)`` labels ``-> (n, 4)``: the labels of each member of :func:`orbit_images`."""
    members = [rotate_labels(labels, image_size, p) for p in range(GROUP_ORDER)]
    return {k: torch.stack([m[k] for m in members], dim=1) for k in labels}


def render(labels: dict[str, torch.Tensor], config: ShapesConfig) -> torch.Tensor:
    """``(n, 3, S, S)`` float32 images in [0, 1] drawn from ``(n,)`` integer labels."""
    size = config.image_size
    grid = torch.arange(size, dtype=torch.float32)
    n = labels["shape"].shape[0]
    images = torch.zeros(n, 3, size, size)
    palette = torch.tensor(PALETTE)
    for i in range(n):
        dy = grid[:, None] - labels["row"][i].float()
        dx = grid[None, :] - labels["col"][i].float()
        dy, dx = _unrotate(dy.expand(size, size), dx.expand(size, size), int(labels["orientation"][i]))
        mask = _base_mask(int(labels["shape"][i]), dy, dx, config.radii[int(labels["size"][i])])
        images[i] = mask[None].float() * palette[int(labels["colour"][i])][:, None, None]
    return images


class ShapesWorld:
    """``n_samples`` shape images and their labels (see the module docstring).

    ``images``: ``(n, 3, S, S)`` float32. ``labels``: ``{factor: (n,) int64}`` for every name in
    ``FACTORS``. Same config -> same tensors.
    """

    def __init__(self, config: ShapesConfig | None = None, **fields):
        if config is not None and fields:
            raise TypeError("pass either a ShapesConfig or keyword fields, not both")
        self.config = config if config is not None else ShapesConfig(**fields)
        self.labels = self._draw_labels()
        self.images = render(self.labels, self.config)

    @property
    def n_values(self) -> dict[str, int]:
        """Number of values of each factor (row/col: the canvas side)."""
        s = self.config.image_size
        return {
            "shape": len(SHAPES),
            "colour": len(PALETTE),
            "size": len(self.config.radii),
            "orientation": GROUP_ORDER,
            "row": s,
            "col": s,
            "quadrant": GROUP_ORDER,
        }

    def _draw_labels(self) -> dict[str, torch.Tensor]:
        cfg = self.config
        seed = int(np.random.SeedSequence([cfg.seed, 11]).generate_state(1)[0])
        gen = torch.Generator().manual_seed(seed)
        n = cfg.n_samples

        def draw(high: int, low: int = 0) -> torch.Tensor:
            return torch.randint(low, high, (n,), generator=gen)

        margin = max(cfg.radii) + 1  # symmetric, so rotated centres stay on the canvas
        labels = {
            "shape": draw(len(SHAPES)),
            "colour": draw(len(PALETTE)),
            "size": draw(len(cfg.radii)),
            "orientation": draw(GROUP_ORDER),
            "row": draw(cfg.image_size - margin, margin),
            "col": draw(cfg.image_size - margin, margin),
        }
        labels["quadrant"] = _quadrant(labels["row"], labels["col"], cfg.image_size)
        return labels

    def orbits(self) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``(n, 4, 3, S, S)`` orbit images and their ``(n, 4)`` labels."""
        return orbit_images(self.images), orbit_labels(self.labels, self.config.image_size)

    def __len__(self) -> int:
        return self.config.n_samples

    def __repr__(self) -> str:
        return f"ShapesWorld({self.config})"
