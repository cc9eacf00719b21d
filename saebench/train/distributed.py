"""Data-parallel helpers over ``torch.distributed`` (gloo on CPU, nccl on GPU), for runs under ``torchrun``.

Every rank iterates the same global batches; :func:`shard_batch` gives each rank a contiguous, deterministic
slice. Gradients are combined with :func:`all_reduce_gradients` weighted by each rank's share of the rows,
so for losses that average over rows the result equals the single-process gradient of the whole batch even
when the batch does not split evenly. Outside torchrun everything is a world of one and no collective runs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

__all__ = [
    "DistributedContext",
    "init_from_env",
    "current_context",
    "barrier",
    "cleanup",
    "shard_bounds",
    "shard_batch",
    "batch_rows",
    "all_reduce_sum",
    "all_reduce_gradients",
    "broadcast_module",
    "all_gather_objects",
]


@dataclass(frozen=True)
class DistributedContext:
    """Who this process is: ``rank`` of ``world_size`` (``local_rank`` on its node)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def init_from_env(backend: str | None = None) -> DistributedContext:
    """Initialise the default process group from torchrun's environment (``RANK``, ``WORLD_SIZE``,
    ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``). Idempotent; without those variables (a plain
    ``python`` run) it returns a world of one and initialises nothing.

    ``backend`` defaults to nccl when CUDA is available (and then selects ``cuda:LOCAL_RANK``), else gloo.
    """
    if dist.is_available() and dist.is_initialized():
        return current_context()
    if _env_world_size() <= 1:
        return DistributedContext()
    missing = [v for v in ("RANK", "MASTER_ADDR", "MASTER_PORT") if v not in os.environ]
    if missing:
        raise RuntimeError(f"WORLD_SIZE > 1 but {missing} are not set: launch with torchrun")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend=backend)
    return current_context()


def current_context() -> DistributedContext:
    """The context of the initialised process group, or a world of one.

    Raises if torchrun's environment says ``WORLD_SIZE > 1`` but no process group exists, since silently
    training independent copies would be wrong.
    """
    if dist.is_available() and dist.is_initialized():
        return DistributedContext(
            rank=dist.get_rank(),
            world_size=dist.get_world_size(),
            local_rank=int(os.environ.get("LOCAL_RANK", "0")),
        )
    if _env_world_size() > 1:
        raise RuntimeError(
            "running under torchrun (WORLD_SIZE > 1) but torch.distributed is not initialised: "
            "call saebench.train.distributed.init_from_env() first"
        )
    return DistributedContext()


def barrier() -> None:
    """Wait for every rank (no-op in a world of one)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def cleanup() -> None:
    """Destroy the default process group if one exists."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


# ---------------------------------------------------------------------------- batches
def shard_bounds(n_rows: int, rank: int, world_size: int) -> tuple[int, int]:
    """Rows ``[start, stop)`` of a global batch of ``n_rows`` that ``rank`` trains on: contiguous blocks,
    sizes differing by at most one (the first ``n_rows % world_size`` ranks take one extra row)."""
    base, extra = divmod(n_rows, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def batch_rows(batch: torch.Tensor | Mapping[str, torch.Tensor]) -> int:
    """Number of rows (first-dimension size) of a batch; a dict's tensors must agree."""
    if isinstance(batch, Mapping):
        sizes = {key: value.shape[0] for key, value in batch.items()}
        if len(set(sizes.values())) != 1:
            raise ValueError(f"the tensors of a dict batch must have the same number of rows, got {sizes}")
        return next(iter(sizes.values()))
    return batch.shape[0]


def shard_batch(
    batch: torch.Tensor | Mapping[str, torch.Tensor], rank: int, world_size: int
) -> torch.Tensor | dict[str, torch.Tensor]:
    """This rank's rows of a global batch (a tensor, or every tensor of a dict), see :func:`shard_bounds`."""
    if world_size == 1:
        return batch
    n_rows = batch_rows(batch)
    if n_rows < world_size:
        raise ValueError(f"a global batch of {n_rows} rows cannot be split over {world_size} ranks")
    start, stop = shard_bounds(n_rows, rank, world_size)
    if isinstance(batch, Mapping):
        return {key: value[start:stop] for key, value in batch.items()}
    return batch[start:stop]


# -------------------------------------------------------------------------- collectives
def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over ranks in place (no-op in a world of one); returns it."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_reduce_gradients(parameters: Sequence[nn.Parameter], weight: float) -> None:
    """Replace every gradient by ``sum over ranks of weight_r * grad_r`` in one flat collective.

    With ``weight_r = rows_r / global_rows`` and a loss that averages over rows, this is the gradient of the
    whole global batch. A parameter with no gradient on any rank keeps ``grad = None`` (the optimizer skips
    it); one with a gradient on some ranks only counts zeros on the others.
    """
    params = list(parameters)
    if not params:
        return
    device = params[0].device
    has_grad = torch.tensor([p.grad is not None for p in params], dtype=torch.int32, device=device)
    all_reduce_sum(has_grad)
    active = [p for p, flag in zip(params, has_grad.tolist(), strict=True) if flag]
    if not active:
        return
    flat = torch.cat(
        [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).float() for p in active]
    )
    flat.mul_(weight)
    all_reduce_sum(flat)
    offset = 0
    for p in active:
        n = p.numel()
        reduced = flat[offset : offset + n].view_as(p).to(p.dtype)
        if p.grad is None:
            p.grad = reduced.clone()
        else:
            p.grad.copy_(reduced)
        offset += n


def broadcast_module(module: nn.Module, src: int = 0, buffers_only: bool = False) -> None:
    """Copy ``src``'s parameters and buffers (or only buffers) into every rank's ``module`` in place."""
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return
    tensors = list(module.buffers()) if buffers_only else list(module.state_dict().values())
    with torch.no_grad():
        for tensor in tensors:
            dist.broadcast(tensor, src=src)


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj`` (picklable), in rank order; ``[obj]`` in a world of one."""
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return [obj]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered
