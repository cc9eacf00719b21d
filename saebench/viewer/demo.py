"""A planted token world for ``saebench view --demo``: images whose SAE codes are known exactly.

Each image is a ``grid x grid`` board of ``patch x patch`` pixel cells on a dark, noisy background. One
concept (its class) covers a rectangle of 1-2 x 1-2 cells; with probability 1/2 a second concept covers one
free cell. Concept ``k`` is drawn as a flat colour with its own pattern (:data:`CONCEPTS`). The codes are the
ground truth an ideal SAE would recover, laid out as a ViT's tokens ``[cls, patches]``:

- latent ``k < K`` (concept ``k``) fires at each cell the concept covers with a per-image strength in
  ``[0.6, 1.4]``, and at the class token with half the main concept's strength;
- :data:`OBJECT_LATENT` ("any object", ``K``) fires on every covered cell with a per-image strength in
  ``[0.3, 1.2]``, so a covered token has two latents, in either order of strength;
- :data:`BACKGROUND_LATENT` (``K + 1``) fires weakly (``[0.05, 0.2]``) on a random half of the empty cells;
- :data:`DEAD_LATENT` (``K + 2``) never fires: the viewer shows how a dead latent looks.

This is our design (no paper defines it); it shows the viewer working with nothing cached, and its masks are
the answer key of the viewer's browser test.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from saebench.acts.tokens import TokenLayout
from saebench.viewer.bundle import write_viewer_bundle

CONCEPTS: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("red block", (230, 40, 40)),
    ("green stripes", (40, 200, 60)),
    ("blue checker", (50, 90, 240)),
    ("yellow cross", (240, 220, 40)),
    ("magenta dot", (220, 50, 220)),
    ("cyan frame", (40, 220, 220)),
)
"""(name, RGB colour) of each planted concept; its index is its latent and its class."""

EMPTY = -1
"""Mask value of a cell that no concept covers."""

OBJECT_LATENT, BACKGROUND_LATENT, DEAD_LATENT = len(CONCEPTS), len(CONCEPTS) + 1, len(CONCEPTS) + 2
N_LATENTS = len(CONCEPTS) + 3


@dataclass(frozen=True)
class PlantedTokenWorld:
    """images ``(n, S, S, 3)`` uint8 with ``S = grid * patch``; codes ``(n, 1 + grid**2, K + 3)`` float32;
    labels ``(n,)`` int64 (the main concept); masks ``(n, grid, grid)`` int64 concept per cell or EMPTY."""

    images: np.ndarray
    codes: np.ndarray
    labels: np.ndarray
    masks: np.ndarray
    layout: TokenLayout
    class_names: tuple[str, ...]


def _concept_pixels(concept: int, patch: int) -> np.ndarray:
    """``(patch, patch)`` bool: which pixels of one cell concept ``concept`` paints (its pattern)."""
    r, c = np.mgrid[0:patch, 0:patch]
    edge = (r == 0) | (c == 0) | (r == patch - 1) | (c == patch - 1)
    centre = (patch - 1) / 2
    patterns = (
        np.ones((patch, patch), dtype=bool),
        r % 2 == 0,
        (r + c) % 2 == 0,
        (np.abs(r - centre) < 1) | (np.abs(c - centre) < 1),
        (r - centre) ** 2 + (c - centre) ** 2 <= (patch / 3) ** 2,
        edge,
    )
    return patterns[concept]


def planted_token_world(
    n_images: int = 96, grid: int = 4, patch: int = 8, seed: int = 0
) -> PlantedTokenWorld:
    """Draw the world described in the module docstring (deterministic in ``seed``)."""
    if n_images <= 0 or grid < 2 or patch < 4:
        raise ValueError(f"need n_images > 0, grid >= 2, patch >= 4; got {n_images}, {grid}, {patch}")
    rng = np.random.default_rng(seed)
    n_concepts = len(CONCEPTS)
    size = grid * patch
    layout = TokenLayout(n_cls=1, grid=(grid, grid))
    images = rng.integers(10, 40, size=(n_images, size, size, 3)).astype(np.uint8)
    codes = np.zeros((n_images, layout.n_tokens, N_LATENTS), dtype=np.float32)
    masks = np.full((n_images, grid, grid), EMPTY, dtype=np.int64)
    labels = rng.integers(0, n_concepts, size=n_images)
    for i, label in enumerate(labels):
        height, width = rng.integers(1, 3, size=2)
        top, left = rng.integers(0, grid - height + 1), rng.integers(0, grid - width + 1)
        masks[i, top : top + height, left : left + width] = label
        if rng.random() < 0.5:
            free = np.argwhere(masks[i] == EMPTY)
            second = rng.choice([k for k in range(n_concepts) if k != label])
            row, col = free[rng.integers(len(free))]
            masks[i, row, col] = second
        strengths = rng.uniform(0.6, 1.4, size=n_concepts)
        object_strength = rng.uniform(0.3, 1.2)
        for (row, col), concept in np.ndenumerate(masks[i]):
            token = layout.n_prefix + row * grid + col
            if concept == EMPTY:
                if rng.random() < 0.5:
                    codes[i, token, BACKGROUND_LATENT] = rng.uniform(0.05, 0.2)
                continue
            codes[i, token, concept] = strengths[concept]
            codes[i, token, OBJECT_LATENT] = object_strength
            cell = images[i, row * patch : (row + 1) * patch, col * patch : (col + 1) * patch]
            cell[_concept_pixels(concept, patch)] = CONCEPTS[concept][1]
        codes[i, 0, label] = strengths[label] / 2
    return PlantedTokenWorld(
        images=images,
        codes=codes,
        labels=labels.astype(np.int64),
        masks=masks,
        layout=layout,
        class_names=tuple(name for name, _ in CONCEPTS),
    )


def write_demo_bundle(out_dir: str | Path, n_images: int = 96, seed: int = 0) -> Path:
    """Write the planted world's bundle to ``out_dir`` (what ``saebench view --demo`` shows)."""
    world = planted_token_world(n_images=n_images, seed=seed)
    return write_viewer_bundle(
        out_dir,
        world.images,
        world.codes,
        world.layout,
        labels=world.labels,
        class_names=world.class_names,
        top_n=8,
        title="demo: planted token world (codes are the ground truth)",
    )
