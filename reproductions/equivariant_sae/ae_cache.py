"""The Shapes autoencoders' on-disk cache, keyed by everything that determines their weights (as the zoo's
models are, :mod:`saebench.zoo.registry`)::

    $SAEBENCH_CACHE/shapes-ae/<architecture>-<spec hash>/     (default ~/.cache/saebench/shapes-ae/...)
        weights.safetensors                                   # the autoencoder's state dict
        record.json                                           # spec, last-epoch pixel MSE, training time

The spec holds the Shapes world's config (with its seed), the architecture, the training settings, the seed
and the device type; a change to any of them, or to :data:`AE_FORMAT`, trains a new autoencoder. A folder is
written under a temporary name and renamed when complete, so an interrupted run leaves no partial entry.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from saebench.data.shapes import ShapesConfig
from saebench.zoo.registry import cache_root

from .autoencoders import ShapesAutoencoder, build_autoencoder, train_autoencoder

AE_FORMAT = 1
"""Version of the autoencoders' code, part of every spec: bump it when a change would change trained
weights."""
WEIGHTS_FILE = "weights.safetensors"
RECORD_FILE = "record.json"


def autoencoder_spec(
    architecture: str, world: ShapesConfig, ae: dict[str, Any], seed: int, device: torch.device
) -> dict[str, Any]:
    """Everything that determines the trained weights; ``ae`` is the config's ``ae`` block."""
    spec = {
        "ae_format": AE_FORMAT,
        "architecture": architecture,
        "world": dataclasses.asdict(world),
        "ae": dict(sorted(ae.items())),
        "seed": seed,
        "device": device.type,
    }
    return json.loads(json.dumps(spec))


def spec_folder(spec: dict[str, Any]) -> Path:
    """``<cache root>/shapes-ae/<architecture>-<first 16 hex digits of the spec's sha256>``."""
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    return cache_root() / "shapes-ae" / f"{spec['architecture']}-{digest[:16]}"


def _load(folder: Path, model: ShapesAutoencoder) -> float:
    try:
        state = load_file(folder / WEIGHTS_FILE)
        record = json.loads((folder / RECORD_FILE).read_text())
        model.load_state_dict({k: v.to(next(model.parameters()).device) for k, v in state.items()})
    except Exception as error:  # a damaged entry: say which folder, and how to recover
        raise RuntimeError(
            f"the cached Shapes autoencoder in {folder} cannot be read ({error}); delete that folder to "
            "train it again"
        ) from error
    return float(record["ae_mse"])


def trained_autoencoder(
    architecture: str,
    world_config: ShapesConfig,
    images: torch.Tensor,
    ae: dict[str, Any],
    seed: int,
    device: torch.device,
    cache: bool = True,
) -> tuple[ShapesAutoencoder, float]:
    """The trained ``architecture`` autoencoder and its last-epoch pixel MSE, trained on ``images``
    (``(n, 3, S, S)``, the world's images) from ``torch.manual_seed(seed)``. ``ae``: ``{latent_dim, epochs,
    lr}`` (README ``--ae-latent-dim``, ``--ae-epochs``). With ``cache``, read from the cache when there, else
    trained and saved there."""
    spec = autoencoder_spec(architecture, world_config, ae, seed, device)
    folder = spec_folder(spec)
    torch.manual_seed(seed)
    model = build_autoencoder(architecture, world_config.image_size, ae["latent_dim"]).to(device)
    if cache and folder.is_dir():
        return model, _load(folder, model)
    start = time.perf_counter()
    ae_mse = train_autoencoder(model, images.to(device), ae["epochs"], lr=ae["lr"], seed=seed)
    if cache:
        record = {"spec": spec, "ae_mse": ae_mse, "train_seconds": time.perf_counter() - start}
        _save(folder, model, {**record, "torch": torch.__version__})
    return model, ae_mse


def _save(folder: Path, model: ShapesAutoencoder, record: dict[str, Any]) -> None:
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(weights, staging / WEIGHTS_FILE)
        (staging / RECORD_FILE).write_text(json.dumps(record, indent=2) + "\n")
        try:
            os.replace(staging, folder)
        except OSError:
            if not folder.is_dir():
                raise  # another process finishing the same entry first is the only expected failure
    finally:
        shutil.rmtree(staging, ignore_errors=True)
