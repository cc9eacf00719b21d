"""A training run on disk: checkpoints (atomic, resumable), RNG state capture, and the JSONL step log.

Checkpoint layout: ``<checkpoint_dir>/step_<8-digit step>/`` holding

- ``sae.safetensors`` + ``sae.json``: the SAE in the :func:`saebench.sae.save_sae` format, so any checkpoint
  loads directly with ``load_sae``;
- ``trainer_state.pt``: optimizer, scheduler, grad scaler, dead-latent tracker, the step, the data position
  (batches consumed, and the iterable's own ``state_dict()`` if it has one), the RNG states of every rank
  (torch, CUDA, numpy, python) and the config. It holds only tensors and plain Python data and is read with
  ``torch.load(weights_only=True)``.

A checkpoint is written into a hidden temporary folder, every file is flushed to disk, and the folder is then
renamed into place, so a ``step_*`` folder is always complete: a run killed mid-write leaves only a
``.tmp-*`` folder, which the next run removes.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from saebench.sae.base import SAE, save_sae

__all__ = [
    "CHECKPOINT_FORMAT_VERSION",
    "checkpoint_path",
    "list_checkpoints",
    "latest_checkpoint",
    "write_checkpoint",
    "read_trainer_state",
    "load_sae_weights",
    "prune_checkpoints",
    "remove_stale_temporaries",
    "capture_rng_state",
    "restore_rng_state",
    "seed_everything",
    "JsonlLog",
]

CHECKPOINT_FORMAT_VERSION = 1
SAE_STEM = "sae"
STATE_FILE = "trainer_state.pt"
_STEP_DIR = re.compile(r"^step_(\d+)$")
_TMP_PREFIX = ".tmp-"


# ------------------------------------------------------------------------------ layout
def checkpoint_path(checkpoint_dir: str | Path, step: int) -> Path:
    return Path(checkpoint_dir) / f"step_{step:08d}"


def list_checkpoints(checkpoint_dir: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints in ``checkpoint_dir`` as ``(step, path)``, oldest first."""
    root = Path(checkpoint_dir)
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        match = _STEP_DIR.match(child.name)
        if match and child.is_dir() and (child / STATE_FILE).is_file():
            found.append((int(match.group(1)), child))
    return sorted(found)


def latest_checkpoint(checkpoint_dir: str | Path) -> Path | None:
    """The checkpoint with the highest step, or ``None`` if there is none."""
    found = list_checkpoints(checkpoint_dir)
    return found[-1][1] if found else None


# ------------------------------------------------------------------------------ writing
def _fsync_dir(folder: Path) -> None:
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _fsync_tree(folder: Path) -> None:
    """Flush every file of ``folder`` and the folder's entries to disk."""
    for file in folder.iterdir():
        with open(file, "rb") as handle:
            os.fsync(handle.fileno())
    _fsync_dir(folder)


def write_checkpoint(checkpoint_dir: str | Path, step: int, sae: SAE, trainer_state: dict[str, Any]) -> Path:
    """Atomically write checkpoint ``step`` (see the module docstring) and return its folder."""
    root = Path(checkpoint_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = checkpoint_path(root, step)
    tmp = root / f"{_TMP_PREFIX}{final.name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    save_sae(sae, tmp / SAE_STEM, extra={"step": step})
    torch.save({"format_version": CHECKPOINT_FORMAT_VERSION, **trainer_state}, tmp / STATE_FILE)
    _fsync_tree(tmp)
    if final.exists():  # a stale folder of the same step from an abandoned run: replace it
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync_dir(root)
    return final


def prune_checkpoints(checkpoint_dir: str | Path, keep: int | None) -> None:
    """Delete all but the ``keep`` newest checkpoints (``None``: keep all). Each is first renamed to a
    temporary name, so a kill during the deletion never leaves a half-deleted ``step_*`` folder."""
    if keep is None:
        return
    for _, path in list_checkpoints(checkpoint_dir)[:-keep]:
        doomed = path.with_name(f"{_TMP_PREFIX}deleting-{path.name}-{os.getpid()}")
        os.replace(path, doomed)
        shutil.rmtree(doomed, ignore_errors=True)


def remove_stale_temporaries(checkpoint_dir: str | Path) -> None:
    """Remove half-written ``.tmp-*`` folders left by a run that died while writing a checkpoint."""
    root = Path(checkpoint_dir)
    if root.is_dir():
        for child in root.iterdir():
            if child.name.startswith(_TMP_PREFIX):
                shutil.rmtree(child, ignore_errors=True)


# ------------------------------------------------------------------------------ reading
def read_trainer_state(path: str | Path) -> dict[str, Any]:
    """The ``trainer_state.pt`` of checkpoint folder ``path``; a missing file is an error naming it."""
    file = Path(path) / STATE_FILE
    if not file.is_file():
        raise FileNotFoundError(f"checkpoint state file {file} is missing")
    state = torch.load(file, map_location="cpu", weights_only=True)
    version = state.get("format_version")
    if version != CHECKPOINT_FORMAT_VERSION:
        raise ValueError(
            f"checkpoint {path} has format version {version}, this saebench reads {CHECKPOINT_FORMAT_VERSION}"
        )
    return state


def load_sae_weights(path: str | Path, sae: SAE) -> None:
    """Copy the weights of checkpoint folder ``path`` into ``sae`` in place (keeping parameter identity, so an
    optimizer built on ``sae`` stays attached). The architecture and config must match the saved ones."""
    from safetensors.torch import load_file

    folder = Path(path)
    meta_file, weights_file = folder / f"{SAE_STEM}.json", folder / f"{SAE_STEM}.safetensors"
    for file in (meta_file, weights_file):
        if not file.is_file():
            raise FileNotFoundError(f"checkpoint file {file} is missing")
    meta = json.loads(meta_file.read_text())
    if meta["architecture"] != sae.architecture or meta["config"] != sae.config.to_dict():
        raise ValueError(
            f"checkpoint {folder} holds a {meta['architecture']!r} SAE with config {meta['config']}, "
            f"but the SAE being trained is {sae.architecture!r} with config {sae.config.to_dict()}"
        )
    state = load_file(str(weights_file))
    with torch.no_grad():
        sae.load_state_dict(state, strict=True)


# -------------------------------------------------------------------------------- RNG
def seed_everything(seed: int) -> None:
    """Seed python ``random``, numpy's global generator and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def capture_rng_state() -> dict[str, Any]:
    """This process's RNG states as tensors and plain data (loadable with ``weights_only=True``)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np_state = state["numpy"]
    np.random.set_state(
        (
            np_state["kind"],
            np_state["keys"].numpy().astype(np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ------------------------------------------------------------------------------ step log
class JsonlLog:
    """Append-only JSONL log, one JSON object per step, flushed after every line.

    ``resume_at_step``: keep only the lines of steps ``<= resume_at_step`` (dropping lines written after that
    checkpoint and a line cut short by a kill), rewritten atomically; otherwise the file starts empty.
    ``enabled=False`` (non-zero ranks) makes every call a no-op.
    """

    def __init__(self, path: str | Path | None, resume_at_step: int | None = None, enabled: bool = True):
        self.path = Path(path) if path is not None else None
        self._handle = None
        if self.path is None or not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_at_step is not None and self.path.exists():
            self._truncate_after(resume_at_step)
            self._handle = open(self.path, "a")
        else:
            self._handle = open(self.path, "w")

    def _truncate_after(self, step: int) -> None:
        kept = []
        for line in self.path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a kill
            if isinstance(record, dict) and record.get("step", step + 1) <= step:
                kept.append(line)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text("".join(f"{line}\n" for line in kept))
        os.replace(tmp, self.path)

    def write(self, record: dict[str, Any]) -> None:
        if self._handle is not None:
            self._handle.write(json.dumps(record, default=_json_default) + "\n")
            self._handle.flush()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def _json_default(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.item() if value.numel() == 1 else value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot write {type(value).__name__} to the JSONL log")
