"""The equivariant-SAE toy model: planted features that come in orbits under a linear group action.

Erdogan & Lucic (arXiv:2511.09432) motivate equivariant SAEs with a toy model (the repository's
``01_toy_model.ipynb``, not available to us; ``shared/papers/equivariant.md`` §5.1). Our version:

* a :class:`~saebench.data.synthetic.PlantedWorld` gives canonical samples ``s = codes @ F + noise`` over
  ``n_atoms`` unit "orbit representative" atoms ``F`` (``(n_atoms, d)``);
* an orthogonal matrix ``M`` ``(d, d)`` of order ``G`` (``M^G = I``) is the group action: ``M = Q P Q^T`` with
  ``Q`` a random rotation and ``P`` the permutation that shifts ``G`` blocks of ``d / G`` coordinates
  cyclically (so ``d`` must be a multiple of ``G``);
* a sample's orbit is ``x_p = M^p s`` for ``p = 0..G-1`` (member 0 is the canonical pose).

The data therefore contain ``G * n_atoms`` directions ``M^r F_j`` (:attr:`OrbitWorld.true_atoms`): a
vanilla SAE needs one latent per orbit member, while an SAE that knows ``M`` needs one per orbit
(:attr:`OrbitWorld.orbit_atoms`). Deterministic by seed.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from saebench.data.synthetic import PlantedWorld, PlantedWorldConfig

__all__ = ["OrbitWorldConfig", "OrbitWorld", "cyclic_group_action"]

_ACTION_STREAM = 7  # seed-sequence key of M's random rotation (PlantedWorld keys its own streams)


def cyclic_group_action(d: int, group_order: int, seed: int = 0) -> torch.Tensor:
    """``(d, d)`` orthogonal ``M = Q P Q^T`` with ``M^group_order = I`` and no smaller power equal to ``I``.

    ``P`` maps block ``b`` of ``d / group_order`` coordinates to block ``b + 1 mod group_order``;
    ``Q`` is a Haar-random rotation (QR of a Gaussian matrix, signs fixed) drawn from ``seed``.
    """
    if group_order < 2 or d % group_order:
        raise ValueError(f"d ({d}) must be a multiple of group_order ({group_order}) and group_order >= 2")
    block = d // group_order
    permutation = torch.roll(torch.eye(d, dtype=torch.float64), shifts=block, dims=0)
    gen = torch.Generator().manual_seed(
        int(np.random.SeedSequence([seed, _ACTION_STREAM]).generate_state(1)[0])
    )
    q, r = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))
    return (q @ permutation @ q.T).to(torch.float32)


@dataclass(frozen=True)
class OrbitWorldConfig:
    """The toy model: ``world`` (a :class:`PlantedWorldConfig`, or its fields as a dict; its seed is
    replaced by ``seed``) and ``group_order`` ``G`` (4 for C4)."""

    world: PlantedWorldConfig | dict = field(default_factory=PlantedWorldConfig)
    group_order: int = 4
    seed: int = 0

    def __post_init__(self) -> None:
        world = self.world if isinstance(self.world, PlantedWorldConfig) else PlantedWorldConfig(**self.world)
        object.__setattr__(self, "world", PlantedWorldConfig(**{**world.to_dict(), "seed": self.seed}))
        if self.group_order < 2 or world.d % self.group_order:
            raise ValueError(
                f"world.d ({world.d}) must be a multiple of group_order ({self.group_order}) "
                "and group_order >= 2"
            )


class OrbitWorld:
    """Planted features in orbits of a cyclic group (see the module docstring)."""

    def __init__(self, config: OrbitWorldConfig | None = None, **fields):
        if config is not None and fields:
            raise TypeError("pass either an OrbitWorldConfig or keyword fields, not both")
        self.config = config if config is not None else OrbitWorldConfig(**fields)
        self.canonical = PlantedWorld(self.config.world)
        self.group_order = self.config.group_order
        self.M = cyclic_group_action(self.d, self.group_order, self.config.seed)
        self._powers = torch.stack([torch.linalg.matrix_power(self.M, p) for p in range(self.group_order)])

    @property
    def d(self) -> int:
        return self.config.world.d

    @property
    def orbit_atoms(self) -> torch.Tensor:
        """``(n_atoms, d)`` one representative per orbit (the canonical-pose atoms)."""
        return self.canonical.true_atoms

    @property
    def true_atoms(self) -> torch.Tensor:
        """``(G * n_atoms, d)`` every orbit member ``M^r F_j``, ``r``-major (row ``r * n_atoms + j``)."""
        return torch.einsum("rij,nj->rni", self._powers, self.orbit_atoms).reshape(-1, self.d)

    def orbit_of(self, canonical: torch.Tensor) -> torch.Tensor:
        """``(n, d) -> (n, G, d)``: ``[:, p] = M^p s``."""
        return torch.einsum("pij,nj->npi", self._powers, canonical)

    def orbit_batches(self, batch_size: int, n_batches: int | None = None) -> Iterator[torch.Tensor]:
        """``(batch_size, G, d)`` orbit batches of the canonical world's training stream."""
        for canonical in self.canonical.batches(batch_size, n_batches):
            yield self.orbit_of(canonical)

    def member_batches(self, batch_size: int, n_batches: int | None = None) -> Iterator[torch.Tensor]:
        """``(batch_size * G, d)`` the same data as :meth:`orbit_batches`, members as separate rows
        (what a vanilla SAE trains on)."""
        for orbits in self.orbit_batches(batch_size, n_batches):
            yield orbits.reshape(-1, self.d)

    def sample_orbits(self, n: int, stream: int = 0) -> torch.Tensor:
        """``(n, G, d)`` held-out orbits (never a training batch)."""
        return self.orbit_of(self.canonical.sample(n, stream).x)

    def __repr__(self) -> str:
        return f"OrbitWorld({self.config})"
