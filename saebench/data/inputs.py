"""Turn a data spec given on the command line into a stream of ``(batch, d)`` tensors.

Specs:
    ``planted:d=64,n_atoms=256,k=8,seed=0``  a :class:`~saebench.data.synthetic.PlantedWorld`
        (any :class:`~saebench.data.synthetic.PlantedWorldConfig` field)
    ``path/to/acts.npy`` | ``.pt`` | ``.safetensors``  one 2-D float tensor ``(n, d)`` held in memory;
        batches are drawn without replacement, reshuffled each epoch (deterministic by seed)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from saebench.data.synthetic import PlantedWorld, PlantedWorldConfig

TENSOR_SUFFIXES = (".npy", ".pt", ".safetensors")


@dataclass
class DataInput:
    """A resolved data spec.

    d: row width. batches(batch_size, n_batches, start_batch, seed): the training stream.
    heldout(n): rows never used for training (planted worlds) or the first ``n`` rows (files).
    true_atoms: ``(n_atoms, d)`` ground-truth dictionary when known (planted worlds), else ``None``.
    """

    description: str
    d: int
    world: PlantedWorld | None = None
    rows: torch.Tensor | None = None

    @property
    def true_atoms(self) -> torch.Tensor | None:
        return self.world.true_atoms if self.world is not None else None

    def batches(
        self, batch_size: int, n_batches: int, start_batch: int = 0, seed: int = 0
    ) -> Iterator[torch.Tensor]:
        if self.world is not None:
            return self.world.batches(batch_size, n_batches, start_batch=start_batch)
        return _tensor_batches(self.rows, batch_size, n_batches, start_batch, seed)

    def heldout(self, n: int) -> torch.Tensor:
        if self.world is not None:
            return self.world.sample(n).x
        return self.rows[:n]


def _tensor_batches(
    rows: torch.Tensor, batch_size: int, n_batches: int, start_batch: int, seed: int
) -> Iterator[torch.Tensor]:
    """Batches of a permutation of ``rows``, a fresh permutation per epoch; the last partial batch of an
    epoch is dropped so every batch has ``batch_size`` rows."""
    per_epoch = rows.shape[0] // batch_size
    if per_epoch == 0:
        raise ValueError(f"batch_size {batch_size} is larger than the data ({rows.shape[0]} rows)")
    for index in range(start_batch, start_batch + n_batches):
        epoch, position = divmod(index, per_epoch)
        order = torch.randperm(rows.shape[0], generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
        yield rows[order[position * batch_size : (position + 1) * batch_size]]


def parse_planted_spec(spec: str) -> PlantedWorldConfig:
    """``"planted:d=64,k=8"`` -> :class:`PlantedWorldConfig`; unknown fields list the valid ones."""
    body = spec.split(":", 1)[1] if ":" in spec else ""
    fields = {f.name: f.type for f in dataclasses.fields(PlantedWorldConfig)}
    values: dict[str, object] = {}
    for item in filter(None, body.split(",")):
        key, _, raw = item.partition("=")
        if key not in fields or key == "hierarchy":
            valid = sorted(k for k in fields if k != "hierarchy")
            raise ValueError(f"unknown planted-world field {key!r} in {spec!r}; valid fields: {valid}")
        values[key] = _parse_scalar(raw)
    return PlantedWorldConfig(**values)


def _parse_scalar(raw: str) -> object:
    for cast in (int, float):
        try:
            return cast(raw)
        except ValueError:
            pass
    return raw


def load_tensor_file(path: Path) -> torch.Tensor:
    """Read one 2-D float tensor from ``.npy``, ``.pt`` or ``.safetensors`` (holding exactly one tensor)."""
    if not path.exists():
        raise FileNotFoundError(f"data file {path} does not exist")
    if path.suffix == ".npy":
        tensor = torch.from_numpy(np.load(path))
    elif path.suffix == ".pt":
        tensor = torch.load(path, map_location="cpu", weights_only=True)
    elif path.suffix == ".safetensors":
        from safetensors.torch import load_file

        tensors = load_file(str(path))
        if len(tensors) != 1:
            raise ValueError(
                f"{path} holds {len(tensors)} tensors ({sorted(tensors)}); save exactly one (n, d) tensor"
            )
        tensor = next(iter(tensors.values()))
    else:
        raise ValueError(f"unsupported data file {path}: use one of {TENSOR_SUFFIXES} or a planted:... spec")
    if not isinstance(tensor, torch.Tensor) or tensor.ndim != 2:
        shape = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
        raise ValueError(f"{path} must hold one 2-D tensor (n_rows, d); found {shape}")
    tensor = tensor.float()
    if not torch.isfinite(tensor).all():
        raise ValueError(f"{path} contains NaN/Inf values; clean the activations first")
    return tensor


def open_data(spec: str) -> DataInput:
    """Resolve a data spec (see the module docstring)."""
    if spec.startswith("planted"):
        world = PlantedWorld(parse_planted_spec(spec))
        return DataInput(description=repr(world), d=world.d, world=world)
    path = Path(spec)
    rows = load_tensor_file(path)
    return DataInput(description=str(path), d=rows.shape[1], rows=rows)
