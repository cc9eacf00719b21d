"""A toy multi-model world: synthetic "models" that see planted concepts through different random maps.

The USAE reproduction's toy tier (``papers/usae.md`` §7.1 item 2). There are three concept groups:

- ``universal``: seen by every model;
- ``shared``: for each pair of models, concepts seen by those two only;
- ``private``: for each model, concepts only it sees.

One row (a "token") has a non-negative k-sparse code over all concepts (k distinct concepts, magnitudes
uniform in ``[min_magnitude, max_magnitude]``). Model ``i``'s activation of that row is
``codes[:, C_i] @ W_i + noise`` where ``C_i`` are the concepts model ``i`` sees and ``W_i`` is
``(|C_i|, d_i)`` with random unit rows; every model then applies its own scalar standardisation
(:func:`scalar_standardize`, usae.md §1.5), so row ``t`` of every model's batch shows the same scene: the
batches are aligned.

Deterministic: the maps and standardisation statistics depend only on ``seed``; batch ``b`` of
:meth:`MultiModelWorld.batches` depends on ``(seed, b)``.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

import torch

__all__ = [
    "MultiModelWorldConfig",
    "MultiModelWorld",
    "MultiModelSample",
    "scalar_standardization_stats",
    "scalar_standardize",
    "resize_token_grid",
    "STANDARDIZE_EPS",
]

# ``universal_sae/data.py``: x <- (x - mean) / (std + 1e-5) (usae.md §1.5).
STANDARDIZE_EPS = 1e-5
_STATS_ROWS = 8192
_STATS_STREAM = 1_000_003


def scalar_standardization_stats(x: torch.Tensor) -> tuple[float, float]:
    """One scalar mean and one scalar std over every entry of ``x`` ``(..., d)`` (usae.md §1.5: the authors'
    statistics over all tokens and channels of 1,000 training images). Population std (``unbiased=False``)."""
    if x.numel() < 2 or not torch.isfinite(x).all():
        raise ValueError(
            f"need at least 2 finite values to fit standardisation stats, got shape {tuple(x.shape)}"
        )
    return float(x.mean()), float(x.std(unbiased=False))


def resize_token_grid(tokens: torch.Tensor, side: int) -> torch.Tensor:
    """``(n, T, d)`` patch tokens of a square ``sqrt(T) x sqrt(T)`` grid -> ``(n, side * side, d)`` by
    bilinear interpolation with antialiasing (``interpolate_patch_tokens`` in the authors' code: DINOv2's
    16 x 16 grid to 14 x 14, so token ``t`` is the same image region in every model; usae.md §1.6). CLS must
    be removed first."""
    if tokens.ndim != 3:
        raise ValueError(f"tokens must be (n, T, d), got {tuple(tokens.shape)}")
    n, count, d = tokens.shape
    grid = round(count**0.5)
    if grid * grid != count:
        raise ValueError(f"{count} tokens do not form a square grid; remove the CLS/register tokens first")
    image = tokens.transpose(1, 2).reshape(n, d, grid, grid)
    resized = torch.nn.functional.interpolate(
        image, size=(side, side), mode="bilinear", antialias=True, align_corners=False
    )
    return resized.reshape(n, d, side * side).transpose(1, 2)


def scalar_standardize(x: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    """``(x - mean) / (std + 1e-5)`` elementwise (usae.md §1.5)."""
    return (x - mean) / (std + STANDARDIZE_EPS)


@dataclass(frozen=True)
class MultiModelWorldConfig:
    """model_dims: ``{name: d_i}`` (at least 2 models). n_universal: concepts seen by all models.
    n_shared_per_pair: concepts seen by exactly each pair. n_private_per_model: concepts seen by one model.
    k: concepts active per row. noise_std: Gaussian noise added to each model's raw activations."""

    model_dims: Mapping[str, int]
    n_universal: int = 16
    n_shared_per_pair: int = 8
    n_private_per_model: int = 8
    k: int = 4
    noise_std: float = 0.01
    min_magnitude: float = 0.5
    max_magnitude: float = 1.5
    seed: int = field(default=0, kw_only=True)

    def __post_init__(self) -> None:
        dims = dict(self.model_dims)
        if len(dims) < 2 or any(
            isinstance(d, bool) or not isinstance(d, int) or d <= 0 for d in dims.values()
        ):
            raise ValueError(f"model_dims needs at least 2 models with positive int widths, got {dims}")
        counts = (self.n_universal, self.n_shared_per_pair, self.n_private_per_model)
        if min(counts) < 0 or sum(counts) == 0:
            raise ValueError(f"concept counts must be >= 0 and not all 0, got {counts}")
        object.__setattr__(self, "model_dims", dims)
        if not 0 < self.k <= self.n_concepts:
            raise ValueError(f"k must satisfy 0 < k <= n_concepts={self.n_concepts}, got {self.k}")
        if self.noise_std < 0 or not 0 <= self.min_magnitude <= self.max_magnitude:
            raise ValueError("need noise_std >= 0 and 0 <= min_magnitude <= max_magnitude")

    @property
    def n_concepts(self) -> int:
        m = len(self.model_dims)
        pairs = m * (m - 1) // 2
        return self.n_universal + pairs * self.n_shared_per_pair + m * self.n_private_per_model


class MultiModelSample(NamedTuple):
    """x: ``{model: (n, d_i)}`` standardised activations; codes: ``(n, n_concepts)`` planted codes."""

    x: dict[str, torch.Tensor]
    codes: torch.Tensor


def _generator(*key: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(hash(key) & 0x7FFF_FFFF_FFFF_FFFF)
    return g


class MultiModelWorld:
    """The toy world of the module docstring.

    owners: ``n_concepts`` tuples of the models that see each concept (universal first, then the shared
        concepts pair by pair, then the private ones model by model).
    groups: ``{"universal" | "shared" | "private": (n,) int64 concept indices}``.
    """

    def __init__(self, config: MultiModelWorldConfig) -> None:
        self.config = config
        models = tuple(config.model_dims)
        owners: list[tuple[str, ...]] = [models] * config.n_universal
        for pair in itertools.combinations(models, 2):
            owners += [pair] * config.n_shared_per_pair
        for name in models:
            owners += [(name,)] * config.n_private_per_model
        self.models = models
        self.owners = tuple(owners)
        sizes = [len(o) for o in owners]
        self.groups = {
            group: torch.tensor([c for c, s in enumerate(sizes) if test(s)], dtype=torch.int64)
            for group, test in (
                ("universal", lambda s: s == len(models)),
                ("shared", lambda s: 1 < s < len(models)),
                ("private", lambda s: s == 1),
            )
        }
        self.concepts_of = {
            name: torch.tensor([c for c, o in enumerate(owners) if name in o], dtype=torch.int64)
            for name in models
        }
        self.maps: dict[str, torch.Tensor] = {}
        for index, (name, d) in enumerate(config.model_dims.items()):
            w = torch.randn(len(self.concepts_of[name]), d, generator=_generator(config.seed, 1, index))
            self.maps[name] = w / w.norm(dim=1, keepdim=True)
        raw = self._raw(_STATS_ROWS, _generator(config.seed, _STATS_STREAM))
        self.stats = {name: scalar_standardization_stats(raw.x[name]) for name in models}

    @property
    def n_concepts(self) -> int:
        return self.config.n_concepts

    def true_atoms(self, name: str) -> torch.Tensor:
        """``(n_concepts, d_name)`` planted directions in model ``name``; rows of concepts it does not see
        are 0."""
        atoms = torch.zeros(self.n_concepts, self.config.model_dims[name])
        atoms[self.concepts_of[name]] = self.maps[name]
        return atoms

    def _raw(self, n: int, g: torch.Generator) -> MultiModelSample:
        c = self.config
        active = torch.rand(n, self.n_concepts, generator=g).argsort(dim=1)[:, : c.k]
        magnitude = c.min_magnitude + (c.max_magnitude - c.min_magnitude) * torch.rand(n, c.k, generator=g)
        codes = torch.zeros(n, self.n_concepts).scatter_(1, active, magnitude)
        x = {}
        for name in self.models:
            clean = codes[:, self.concepts_of[name]] @ self.maps[name]
            x[name] = clean + c.noise_std * torch.randn(clean.shape, generator=g)
        return MultiModelSample(x, codes)

    def _standardized(self, n: int, g: torch.Generator) -> MultiModelSample:
        raw = self._raw(n, g)
        x = {name: scalar_standardize(v, *self.stats[name]) for name, v in raw.x.items()}
        return MultiModelSample(x, raw.codes)

    def sample(self, n: int, stream: int = 0) -> MultiModelSample:
        """``n`` aligned rows from a stream disjoint from :meth:`batches` (held-out data)."""
        if n <= 0:
            raise ValueError(f"n must be positive, got {n}")
        return self._standardized(n, _generator(self.config.seed, 2, stream))

    def batches(self, batch_size: int, n_batches: int) -> Iterator[dict[str, torch.Tensor]]:
        """``n_batches`` aligned dict batches ``{model: (batch_size, d_i)}`` (training data)."""
        if batch_size <= 0 or n_batches < 0:
            raise ValueError(f"need batch_size > 0 and n_batches >= 0, got {batch_size}, {n_batches}")
        for b in range(n_batches):
            yield self._standardized(batch_size, _generator(self.config.seed, 3, b)).x
