"""The mini tier's activation stores, cached by one call (``saebench cache-mini [--smoke]``).

Images: the first ``per_class`` training images of each Fashion-MNIST class (12,000 for the mini tier,
1,000 for the smoke run), in file order, through every backbone at the hooks the four papers need
(:data:`MINI_STORES`):

====================================  =======================  ==============================================
store key                             rows per image × width   used for
====================================  =======================  ==============================================
efficientnet-lite0/features/patches   49 × 1280 (7×7 map)      USAE's aligned models (with the two below)
efficientnet-lite0/pooled/all         1 × 1280                 pooled-embedding SAEs (MSAE-style)
zoo-cnn/features/patches              49 × 64 (7×7 map)        USAE's aligned models
zoo-vit/final_norm/patches            49 × 64 (7×7 patches)    USAE's aligned models (final-norm tokens, as
                                                               USAE takes DINOv2's, usae.md §1.7)
zoo-vit/block.-1/all                  50 × 64 (CLS + 7×7)      PatchSAE-style residual stream, all tokens
zoo-vit/pooled/all                    1 × 64                   the CLS after the final norm
zoo-clip/embed/all                    1 × 384                  MSAE-style CLIP embedding; names via MiniLM
zoo-mlp/pooled/all                    1 × 128                  an embedding-only model
====================================  =======================  ==============================================

Everything is resumable: zoo models are cached once trained, and each store resumes after its last complete
shard (:func:`saebench.acts.cache.cache_activations`). A manifest ``mini-tier-<plan>.json`` in the output
folder maps each store key to its content-hashed folder; :func:`open_mini_tier` reads it back.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from saebench.acts.backbones.core import Backbone
from saebench.acts.backbones.registry import load_backbone
from saebench.acts.cache import cache_activations
from saebench.acts.sources import FashionMNISTSource, subset
from saebench.acts.store import AlignedStores, Store
from saebench.acts.tokens import selected_token_indices
from saebench.zoo.registry import (
    ENTRIES,
    SMOKE_ENTRIES,
    TrainedModel,
    ZooEntry,
    backbone_of,
    cache_root,
    ensure_trained,
)
from saebench.zoo.shared_forward import SharedForward

__all__ = [
    "MiniStore",
    "MiniTierPlan",
    "MINI_STORES",
    "ALIGNED_STORES",
    "PLANS",
    "MiniTier",
    "cache_mini_tier",
    "open_mini_tier",
    "channels_last",
    "manifest_path",
]


@dataclass(frozen=True)
class MiniStore:
    """One store of the mini tier: a backbone (a registry name, or a zoo role), a hook, a token selection."""

    backbone: str
    hook: str
    tokens: str
    purpose: str = ""

    @property
    def key(self) -> str:
        return f"{self.backbone}/{self.hook}/{self.tokens}"


MINI_STORES: tuple[MiniStore, ...] = (
    MiniStore("efficientnet-lite0", "features", "patches", "7x7x1280 map; USAE aligned models"),
    MiniStore("efficientnet-lite0", "pooled", "all", "1280-d pooled embedding"),
    MiniStore("zoo-cnn", "features", "patches", "7x7x64 map; USAE aligned models"),
    MiniStore("zoo-vit", "final_norm", "patches", "final-norm 7x7 patch tokens; USAE aligned models"),
    MiniStore("zoo-vit", "block.-1", "all", "residual stream after the last block, CLS + 49 patches"),
    MiniStore("zoo-vit", "pooled", "all", "final-norm CLS token"),
    MiniStore("zoo-clip", "embed", "all", "384-d image embedding in MiniLM's text space"),
    MiniStore("zoo-mlp", "pooled", "all", "128-d embedding"),
)
ALIGNED_STORES: tuple[str, ...] = (
    "efficientnet-lite0/features/patches",
    "zoo-cnn/features/patches",
    "zoo-vit/final_norm/patches",
)
"""Three models, one pretrained on ImageNet and two trained here, on the same images with 7×7 token grids."""


@dataclass(frozen=True)
class MiniTierPlan:
    """What :func:`cache_mini_tier` caches.

    Attributes:
        name: ``"mini"`` or ``"smoke"`` (names the manifest).
        per_class: images per class taken from the Fashion-MNIST training split.
        zoo: role (a backbone name in :attr:`stores`) -> the zoo entry that plays it.
        stores: the stores to cache.
        aligned: store keys that form the aligned group.
    """

    name: str
    per_class: int
    zoo: Mapping[str, ZooEntry] = field(default_factory=lambda: dict(ENTRIES))
    stores: tuple[MiniStore, ...] = MINI_STORES
    aligned: tuple[str, ...] = ALIGNED_STORES

    def __post_init__(self) -> None:
        keys = [store.key for store in self.stores]
        missing = [key for key in self.aligned if key not in keys]
        if missing or len(set(keys)) != len(keys):
            raise ValueError(
                f"plan {self.name!r}: aligned keys {missing} not among its stores, or duplicate stores"
            )


PLANS: dict[str, MiniTierPlan] = {
    "mini": MiniTierPlan("mini", per_class=1200),
    "smoke": MiniTierPlan("smoke", per_class=100, zoo=dict(SMOKE_ENTRIES)),
}
"""The mini tier (12,000 images, the trained zoo) and its CI smoke run (1,000 images, the smoke zoo)."""


def default_out_root() -> Path:
    """``<cache root>/acts``: where mini-tier stores go by default."""
    return cache_root() / "acts"


def manifest_path(out_root: str | Path, plan: str) -> Path:
    return Path(out_root) / f"mini-tier-{plan}.json"


class MiniTier:
    """The stores of one cached plan, read back from its manifest (see :func:`open_mini_tier`)."""

    def __init__(self, root: Path, manifest: dict[str, Any]):
        self.root = root
        self.manifest = manifest

    def keys(self) -> list[str]:
        """The cached store keys, sorted."""
        return sorted(self.manifest["stores"])

    def store(self, key: str) -> Store:
        """The store ``"<backbone>/<hook>/<tokens>"``."""
        if key not in self.manifest["stores"]:
            raise KeyError(f"no mini-tier store {key!r}; cached: {', '.join(self.keys())}")
        return Store(self.root / self.manifest["stores"][key]["folder"])

    def aligned(self) -> AlignedStores:
        """The aligned group, backbone name -> store: the same images in the same order on the same token grid
        (:class:`~saebench.acts.store.AlignedStores` refuses anything else, naming the stores that differ)."""
        return AlignedStores({key.split("/")[0]: self.store(key) for key in self.manifest["aligned"]})


def open_mini_tier(out_root: str | Path | None = None, plan: str = "mini") -> MiniTier:
    """The stores cached by ``cache_mini_tier(out_root, plan)``."""
    root = Path(out_root) if out_root is not None else default_out_root()
    path = manifest_path(root, plan)
    if not path.is_file():
        flag = " --smoke" if plan == "smoke" else ""
        raise FileNotFoundError(
            f"no mini-tier manifest {path}: cache the stores first with "
            f"`saebench cache-mini{flag} --out {root}`"
        )
    return MiniTier(root, json.loads(path.read_text()))


def channels_last(backbone: Backbone) -> Backbone:
    """Lay the model's 4-d tensors out channels-last (in place) when it has convolutions; returns it.

    On CPU, oneDNN runs convolutions much faster on channels-last tensors: EfficientNet-Lite0 at 224 px went
    from 11.5 to 19 images/s at batch 64 and from 26 to 52 at batch 8 (2-core AMD EPYC), and its outputs
    moved by at most 3e-5 (on values up to 6; float16 storage spaces them 0.004 apart). The weights' values,
    and so the backbone's fingerprint and store hashes, do not change.
    """
    if any(isinstance(module, nn.Conv2d) for module in backbone.model.modules()):
        backbone.model.to(memory_format=torch.channels_last)
    return backbone


def _backbone(role: str, trained: Mapping[str, TrainedModel]) -> Backbone:
    """The zoo model playing ``role``, else the registered backbone ``role`` with pretrained weights."""
    backbone = backbone_of(trained[role]) if role in trained else load_backbone(role, pretrained=True)
    return channels_last(backbone)


def _passes(backbone: Backbone, stores: list[MiniStore]) -> list[tuple[str, list[MiniStore]]]:
    """Stores grouped into cache passes (one token selection and one row count per image each), the pass with
    the most rows per image first."""
    groups: dict[tuple[str, int], list[MiniStore]] = {}
    for store in stores:
        layout = backbone.resolve_hook(store.hook).layout
        groups.setdefault((store.tokens, len(selected_token_indices(layout, store.tokens))), []).append(store)
    return [(tokens, group) for (tokens, _), group in sorted(groups.items(), key=lambda item: -item[0][1])]


def cache_mini_tier(
    out_root: str | Path | None = None,
    plan: MiniTierPlan | str = "mini",
    *,
    data_root: str | Path | None = None,
    batch_size: int = 8,
    dtype: str = "float16",
    workers: int = 1,
    progress: bool = True,
) -> MiniTier:
    """Train the plan's zoo models if needed, cache every store of ``plan``, write its manifest.

    Args:
        out_root: root of the content-hashed stores (default ``$SAEBENCH_CACHE/acts``).
        plan: ``"mini"``, ``"smoke"`` or a :class:`MiniTierPlan`.
        data_root: folder of the Fashion-MNIST IDX files (None: the usual places; a missing dataset raises an
            error saying how to install it).
        batch_size, dtype, workers, progress: as in :func:`~saebench.acts.cache.cache_activations`. Small
            batches are faster on CPU here: EfficientNet-Lite0's activations at 224 px stay in cache (52
            images/s at batch 8, 19 at batch 64, channels-last).

    Each backbone's forward pass runs once per image for all its stores (:class:`SharedForward`).
    """
    plan = PLANS[plan] if isinstance(plan, str) else plan
    root = Path(out_root) if out_root is not None else default_out_root()
    source = subset(FashionMNISTSource("train", root=data_root), per_class=plan.per_class)
    start = time.perf_counter()
    trained = {role: ensure_trained(entry, data_root) for role, entry in plan.zoo.items()}
    seconds: dict[str, float] = {"zoo": time.perf_counter() - start}
    entries: dict[str, dict[str, Any]] = {}
    for role in dict.fromkeys(store.backbone for store in plan.stores):
        start = time.perf_counter()
        backbone = _backbone(role, trained)
        passes = _passes(backbone, [store for store in plan.stores if store.backbone == role])
        shared = SharedForward(backbone, [[store.hook for store in group] for _, group in passes])
        for tokens, group in passes:
            result = cache_activations(
                shared,
                source,
                [store.hook for store in group],
                tokens=tokens,
                out_root=root,
                batch_size=batch_size,
                dtype=dtype,
                workers=workers,
                progress=progress,
            )
            for store in group:
                entries[store.key] = _describe(store, backbone, result[store.hook], root)
        seconds[role] = time.perf_counter() - start
    manifest = {
        "plan": plan.name,
        "n_images": len(source),
        "per_class": plan.per_class,
        "source": source.fingerprint(),
        "stores": {store.key: entries[store.key] for store in plan.stores},
        "aligned": list(plan.aligned),
        "zoo": {role: _zoo_summary(model) for role, model in trained.items()},
        "seconds": seconds,
    }
    root.mkdir(parents=True, exist_ok=True)
    manifest_path(root, plan.name).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    tier = MiniTier(root, manifest)
    tier.aligned()  # the aligned group must open: same images, same order, same grids
    return tier


def _describe(store: MiniStore, backbone: Backbone, cached: Store, root: Path) -> dict[str, Any]:
    return {
        "backbone": backbone.name,
        "hook": backbone.resolve_hook(store.hook).name,
        "tokens": store.tokens,
        "purpose": store.purpose,
        "folder": str(Path(cached.path).relative_to(root)),
        "n_rows": cached.n_rows,
        "d": cached.d,
        "tokens_per_image": cached.tokens_per_image,
        "token_grid": list(cached.token_grid) if cached.token_grid else None,
    }


def _zoo_summary(trained: TrainedModel) -> dict[str, Any]:
    record = trained.record
    return {
        "name": trained.entry.name,
        "config_hash": record["config_hash"],
        trained.entry.metric: record[trained.entry.metric],
        "train_seconds": record["train_seconds"],
    }
