"""Planted-dictionary worlds: synthetic activations with a known sparse dictionary, for recovery tests and the
toy tier.

Generative model (one row)::

    active  = a set of atoms: k top-level features (exactly k, Poisson(k) many, or each with prob. k/n_top),
              plus, under a hierarchy, children of the active parents
    z       = coefficients >= 0 on the active atoms, 0 elsewhere             # (n_atoms,)
    x       = z @ true_atoms + noise_std * N(0, I_d)                          # (d,)

``true_atoms`` is ``(n_atoms, d)`` with unit-norm rows, random directions or, with ``atom_coherence = rho``,
directions sharing a common component so that pairwise cosines are about ``rho``.

**Hierarchy** (for the Matryoshka toy tier): atoms ``0 .. n_parents-1`` are parents; the next
``n_parents * children_per_parent`` atoms are their children, grouped by parent (``parent_of`` maps each
atom to its parent, ``-1`` for none); the rest are free. A child can only fire on a row where its parent
fires: given an active parent, either exactly one child fires with probability ``child_probability``
(``exclusive_children``, the mutually exclusive sub-features of Bussmann et al. 2025's Matryoshka toy model)
or each child fires independently with that probability. ``k`` counts the top-level features (parents
and free atoms); children come on top.

**Determinism.** Every random draw comes from a ``torch.Generator`` seeded from ``(seed, stream, index)`` via
``numpy.random.SeedSequence``: the atoms from ``(seed, 0)``, training batch ``i`` from ``(seed, 1, i)``, and
``sample(n, stream=s)`` from ``(seed, 2, s)``. So a stream is reproducible, batch ``i`` costs the same to
make whatever ``i`` is (``start_batch`` resumes a run without replaying it), and held-out samples never
coincide with training batches.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch

__all__ = ["HierarchyConfig", "PlantedWorldConfig", "PlantedSample", "PlantedWorld"]

ACTIVE_COUNTS = ("exact", "poisson", "bernoulli")
COEFFICIENT_DISTRIBUTIONS = ("uniform", "exponential")

_ATOMS_STREAM, _BATCH_STREAM, _SAMPLE_STREAM = 0, 1, 2


@dataclass(frozen=True)
class HierarchyConfig:
    """Parent features with children that can only fire when their parent fires (see the module docstring)."""

    n_parents: int
    children_per_parent: int
    child_probability: float = 1.0
    exclusive_children: bool = True

    def __post_init__(self) -> None:
        if self.n_parents <= 0 or self.children_per_parent <= 0:
            raise ValueError(
                "a hierarchy needs n_parents > 0 and children_per_parent > 0, got "
                f"n_parents={self.n_parents}, children_per_parent={self.children_per_parent}"
            )
        if not 0.0 <= self.child_probability <= 1.0:
            raise ValueError(f"child_probability must lie in [0, 1], got {self.child_probability}")

    @property
    def n_children(self) -> int:
        return self.n_parents * self.children_per_parent


@dataclass(frozen=True)
class PlantedWorldConfig:
    """Everything that determines a planted world (and so, with ``seed``, every number it produces).

    d: data width. n_atoms: ground-truth dictionary size. k: active top-level features per row (exactly, or on
        average for ``"poisson"`` / ``"bernoulli"``).
    active_count: ``"exact"`` (k per row), ``"poisson"`` (Poisson(k) per row, capped at the number of
        top-level atoms), ``"bernoulli"`` (each top-level atom independently with probability k / n_top).
    coefficient_distribution: ``"uniform"`` on ``[coefficient_min, coefficient_max]``, or ``"exponential"``:
        ``coefficient_min + coefficient_scale * Exp(1)``. Coefficients are never negative.
    noise_std: standard deviation of isotropic Gaussian noise added to every coordinate.
    atom_coherence: ``rho`` in [0, 1); atoms are ``normalise(sqrt(1 - rho) g_i + sqrt(rho) u)`` with
        ``g_i ~ N(0, I_d / d)`` and a shared random unit vector ``u``, so pairwise cosines average ~ ``rho``.
    hierarchy: optional :class:`HierarchyConfig`.
    """

    d: int = 64
    n_atoms: int = 256
    k: int = 8
    active_count: str = "exact"
    coefficient_distribution: str = "uniform"
    coefficient_min: float = 0.5
    coefficient_max: float = 1.5
    coefficient_scale: float = 1.0
    noise_std: float = 0.0
    atom_coherence: float = 0.0
    hierarchy: HierarchyConfig | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.hierarchy, dict):  # from a JSON/YAML config
            object.__setattr__(self, "hierarchy", HierarchyConfig(**self.hierarchy))
        if self.d <= 0 or self.n_atoms <= 0:
            raise ValueError(f"d and n_atoms must be positive, got d={self.d}, n_atoms={self.n_atoms}")
        if self.active_count not in ACTIVE_COUNTS:
            raise ValueError(f"unknown active_count {self.active_count!r}; choose one of {ACTIVE_COUNTS}")
        if self.coefficient_distribution not in COEFFICIENT_DISTRIBUTIONS:
            raise ValueError(
                f"unknown coefficient_distribution {self.coefficient_distribution!r}; "
                f"choose one of {COEFFICIENT_DISTRIBUTIONS}"
            )
        h = self.hierarchy
        if h is not None and h.n_parents + h.n_children > self.n_atoms:
            raise ValueError(
                f"the hierarchy needs {h.n_parents} parents + {h.n_children} children, "
                f"more than n_atoms={self.n_atoms}"
            )
        if not 0 < self.k <= self.n_top_level:
            raise ValueError(
                f"k must lie in [1, {self.n_top_level}] (the number of top-level atoms), got k={self.k}"
            )
        if not 0.0 <= self.coefficient_min <= self.coefficient_max:
            raise ValueError(
                "coefficients must be non-negative: need 0 <= coefficient_min <= coefficient_max, got "
                f"{self.coefficient_min}, {self.coefficient_max}"
            )
        if self.coefficient_scale <= 0:
            raise ValueError(f"coefficient_scale must be positive, got {self.coefficient_scale}")
        if self.noise_std < 0:
            raise ValueError(f"noise_std must be >= 0, got {self.noise_std}")
        if not 0.0 <= self.atom_coherence < 1.0:
            raise ValueError(f"atom_coherence must lie in [0, 1), got {self.atom_coherence}")
        if self.seed < 0:
            raise ValueError(
                f"seed must be a non-negative int (it seeds numpy's SeedSequence), got {self.seed}"
            )

    @property
    def n_top_level(self) -> int:
        """Atoms that fire on their own (parents and free atoms): ``n_atoms`` minus the children."""
        return self.n_atoms - (self.hierarchy.n_children if self.hierarchy else 0)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class PlantedSample(NamedTuple):
    """Data with its ground truth. x: ``(n, d)`` float32. codes: ``(n, n_atoms)`` float32, ``x = codes @ atoms
    + noise``."""

    x: torch.Tensor
    codes: torch.Tensor


def _generator(*key: int) -> torch.Generator:
    """A torch generator seeded deterministically from a tuple of non-negative ints."""
    state = np.random.SeedSequence(list(key)).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


class PlantedWorld:
    """A planted-dictionary world; see the module docstring.

    ``PlantedWorld(PlantedWorldConfig(...))`` or ``PlantedWorld(d=64, n_atoms=256, k=8, seed=0)``.
    """

    def __init__(self, config: PlantedWorldConfig | None = None, **fields: Any):
        if config is not None and fields:
            raise TypeError("pass either a PlantedWorldConfig or keyword fields, not both")
        self.config = config if config is not None else PlantedWorldConfig(**fields)
        self.true_atoms = self._make_atoms()
        self.parent_of = self._make_parent_map()
        self._top_level = torch.nonzero(self.parent_of == -1).flatten()  # parents and free atoms, in order

    # ----------------------------------------------------------------- structure
    @property
    def d(self) -> int:
        return self.config.d

    @property
    def n_atoms(self) -> int:
        return self.config.n_atoms

    def _make_atoms(self) -> torch.Tensor:
        cfg = self.config
        gen = _generator(cfg.seed, _ATOMS_STREAM)
        directions = torch.randn(cfg.n_atoms, cfg.d, generator=gen, dtype=torch.float64) / math.sqrt(cfg.d)
        shared = torch.randn(cfg.d, generator=gen, dtype=torch.float64)
        shared = shared / shared.norm()
        rho = cfg.atom_coherence
        atoms = math.sqrt(1.0 - rho) * directions + math.sqrt(rho) * shared
        return (atoms / atoms.norm(dim=1, keepdim=True)).to(torch.float32)

    def _make_parent_map(self) -> torch.Tensor:
        parent_of = torch.full((self.n_atoms,), -1, dtype=torch.int64)
        h = self.config.hierarchy
        if h is not None:
            parent_of[h.n_parents : h.n_parents + h.n_children] = torch.arange(h.n_parents).repeat_interleave(
                h.children_per_parent
            )
        return parent_of

    def children_of(self, parent: int) -> torch.Tensor:
        """Indices of the children of atom ``parent`` (empty for a non-parent)."""
        return torch.nonzero(self.parent_of == parent).flatten()

    # ------------------------------------------------------------------ sampling
    def _active_top_level(self, n: int, gen: torch.Generator) -> torch.Tensor:
        """``(n, n_top)`` bool: which top-level atoms fire on each row."""
        cfg = self.config
        n_top = cfg.n_top_level
        scores = torch.rand(n, n_top, generator=gen)
        if cfg.active_count == "bernoulli":
            return scores < cfg.k / n_top
        # The atoms with the highest uniform scores form a uniformly random subset of any size.
        if cfg.active_count == "exact":
            keep = torch.ones(n, cfg.k, dtype=torch.bool)
        else:
            counts = torch.poisson(torch.full((n, 1), float(cfg.k)), generator=gen).clamp(max=n_top)
            keep = torch.arange(int(counts.max())) < counts
        top = scores.topk(keep.shape[1], dim=1).indices
        return torch.zeros(n, n_top, dtype=torch.bool).scatter_(1, top, keep)

    def _active_children(self, parents_active: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """``(n, n_children)`` bool, children grouped by parent; a child fires only if its parent does."""
        h = self.config.hierarchy
        n = parents_active.shape[0]
        gate = parents_active & (torch.rand(n, h.n_parents, generator=gen) < h.child_probability)
        if h.exclusive_children:
            choice = torch.randint(h.children_per_parent, (n, h.n_parents), generator=gen)
            one_hot = torch.nn.functional.one_hot(choice, h.children_per_parent).bool()
            return (one_hot & gate.unsqueeze(-1)).reshape(n, h.n_children)
        independent = torch.rand(n, h.n_children, generator=gen) < h.child_probability
        return independent & parents_active.repeat_interleave(h.children_per_parent, dim=1)

    def _coefficients(self, count: int, gen: torch.Generator) -> torch.Tensor:
        """``(count,)`` non-negative coefficients for the active entries."""
        cfg = self.config
        if cfg.coefficient_distribution == "uniform":
            u = torch.rand(count, generator=gen)
            return cfg.coefficient_min + (cfg.coefficient_max - cfg.coefficient_min) * u
        return cfg.coefficient_min + cfg.coefficient_scale * torch.empty(count).exponential_(generator=gen)

    def _draw(self, n: int, gen: torch.Generator) -> PlantedSample:
        cfg = self.config
        active = torch.zeros(n, cfg.n_atoms, dtype=torch.bool)
        top = self._active_top_level(n, gen)
        active[:, self._top_level] = top
        h = cfg.hierarchy
        if h is not None:
            active[:, h.n_parents : h.n_parents + h.n_children] = self._active_children(
                top[:, : h.n_parents], gen
            )
        codes = torch.zeros(n, cfg.n_atoms)
        codes[active] = self._coefficients(int(active.sum()), gen)
        x = codes @ self.true_atoms
        if cfg.noise_std > 0:
            x = x + cfg.noise_std * torch.randn(n, cfg.d, generator=gen)
        return PlantedSample(x=x, codes=codes)

    @staticmethod
    def _check_count(value: int, name: str, minimum: int = 1) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")

    def batch(self, index: int, batch_size: int) -> PlantedSample:
        """Training batch number ``index`` of the stream (same world, index and size -> same tensors)."""
        self._check_count(index, "batch index", minimum=0)
        self._check_count(batch_size, "batch_size")
        return self._draw(batch_size, _generator(self.config.seed, _BATCH_STREAM, index))

    def batches(
        self, batch_size: int, n_batches: int | None = None, start_batch: int = 0
    ) -> Iterator[torch.Tensor]:
        """Yield ``(batch_size, d)`` float32 data tensors for batches ``start_batch, start_batch + 1, ...``;
        ``n_batches`` of them, or forever when ``None``. Skipping ahead costs nothing."""
        self._check_count(batch_size, "batch_size")
        self._check_count(start_batch, "start_batch", minimum=0)
        if n_batches is not None:
            self._check_count(n_batches, "n_batches", minimum=0)
        return self._stream(batch_size, n_batches, start_batch)

    def _stream(self, batch_size: int, n_batches: int | None, start_batch: int) -> Iterator[torch.Tensor]:
        index = start_batch
        while n_batches is None or index < start_batch + n_batches:
            yield self.batch(index, batch_size).x
            index += 1

    def sample(self, n: int, stream: int = 0) -> PlantedSample:
        """``n`` rows with their true codes from held-out stream ``stream`` (never a training batch)."""
        self._check_count(n, "n")
        self._check_count(stream, "stream", minimum=0)
        return self._draw(n, _generator(self.config.seed, _SAMPLE_STREAM, stream))

    def __repr__(self) -> str:
        return f"PlantedWorld({self.config})"
