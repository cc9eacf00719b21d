"""The backbone registry: named specs, weight resolution and :func:`load_backbone`."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from saebench.acts.backbones.core import Backbone
from saebench.acts.backbones.preprocessing import Preprocessing
from saebench.acts.backbones.weights import (
    WeightsNotFoundError,
    WeightsSource,
    find_in_hf_cache,
    find_in_weights_dir,
    hub_offline,
    missing_weights_message,
)

BuildFn = Callable[["BackboneSpec", WeightsSource, dict[str, Any], "Preprocessing | None", str], Backbone]
"""``build(spec, weights_source, model_kwargs, preprocessing, build_device) -> Backbone`` (on CPU or meta)."""


class UnknownBackboneError(KeyError):
    """A backbone name that is not registered; the message lists the valid names."""

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class BackboneSpec:
    """A registry entry.

    Attributes:
        name: registry name (``"dinov2-vits14"``).
        library: ``"timm" | "open_clip" | "efficientnet_lite_pytorch"``.
        architecture: the library's model name.
        tag: the library's pretrained tag (timm ``name.tag``; open_clip ``pretrained=tag``), or None.
        preprocessing: the image preprocessing (None: read from the library's config when building).
        build: the family's builder (see :data:`BuildFn`).
        hub_repo, hub_files: the Hugging Face repo and file names of the pretrained checkpoint, looked up in
            the local HF cache and named in the missing-weights error.
        packaged_weights: returns the path of weights shipped in a Python package (or None if not installed).
        model_kwargs: keyword arguments for the library's constructor (e.g. ``img_size=224`` for DINOv2).
        description: one line for the docs: what it is and where its settings come from.
    """

    name: str
    library: str
    architecture: str
    tag: str | None
    preprocessing: Preprocessing | None
    build: BuildFn
    hub_repo: str | None = None
    hub_files: tuple[str, ...] = ()
    packaged_weights: Callable[[], Path | None] | None = None
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    description: str = ""

    @property
    def library_ref(self) -> str:
        """``library architecture[.tag]`` as the library names it."""
        tag = f" (tag {self.tag})" if self.tag else ""
        return f"{self.library} '{self.architecture}'{tag}"


_REGISTRY: dict[str, BackboneSpec] = {}
_PREFIXES: dict[str, Callable[[str], BackboneSpec]] = {}


def register_backbone(spec: BackboneSpec) -> BackboneSpec:
    """Add ``spec`` to the registry (names are unique)."""
    if spec.name in _REGISTRY:
        raise ValueError(f"backbone {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec
    return spec


def register_prefix(prefix: str, make_spec: Callable[[str], BackboneSpec]) -> None:
    """Resolve names ``"<prefix>:<architecture>"`` with ``make_spec(architecture)`` (e.g. any timm ViT)."""
    _PREFIXES[prefix] = make_spec


def available_backbones() -> list[str]:
    """Registered backbone names (sorted); ``"<prefix>:<architecture>"`` names are accepted too."""
    return sorted(_REGISTRY)


def get_spec(name: str) -> BackboneSpec:
    """The spec registered as ``name`` (or built for a ``prefix:architecture`` name)."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    prefix, sep, architecture = name.partition(":")
    if sep and prefix in _PREFIXES and architecture:
        return _PREFIXES[prefix](architecture)
    prefixes = ", ".join(f"'{p}:<architecture>'" for p in sorted(_PREFIXES))
    raise UnknownBackboneError(
        f"unknown backbone {name!r}; registered: {', '.join(available_backbones())}; "
        f"also accepted: {prefixes}"
    )


def resolve_weights(
    spec: BackboneSpec, weights: str | Path | None, pretrained: bool, seed: int
) -> WeightsSource:
    """Decide where the weights come from (see :mod:`saebench.acts.backbones.weights` for the order)."""
    if weights is not None:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"weights file for backbone '{spec.name}' not found: {path}")
        return WeightsSource("file", path=path, tag=spec.tag)
    if not pretrained:
        return WeightsSource("random", seed=seed)
    candidates = [
        find_in_weights_dir(spec.name),
        spec.packaged_weights() if spec.packaged_weights else None,
        find_in_hf_cache(spec.hub_repo, spec.hub_files) if spec.hub_repo else None,
    ]
    for path in candidates:
        if path is not None:
            return WeightsSource("file", path=Path(path), tag=spec.tag)
    if spec.hub_repo and not hub_offline():
        return WeightsSource("hub", tag=spec.tag)
    raise WeightsNotFoundError(
        missing_weights_message(spec.name, spec.library_ref, spec.hub_repo, spec.hub_files)
    )


def load_backbone(
    name: str,
    *,
    weights: str | Path | None = None,
    device: str | torch.device = "cpu",
    pretrained: bool = False,
    seed: int = 0,
    model_kwargs: dict[str, Any] | None = None,
    preprocessing: Preprocessing | None = None,
) -> Backbone:
    """Build a registered backbone, in eval mode, with its hook points.

    Args:
        name: a name from :func:`available_backbones`, or ``"timm:<vit architecture>"``.
        weights: a local checkpoint file (implies pretrained weights).
        device: where the model lives. ``"meta"`` builds the structure without memory or weights (random
            init only): hooks, layouts and output shapes are exact, values are not.
        pretrained: load pretrained weights (see :func:`resolve_weights`); False gives random weights.
        seed: seed of the random init (the global RNG is left untouched), so random backbones are
            reproducible.
        model_kwargs: extra constructor arguments, merged over the spec's (e.g. ``depth=2, img_size=32`` for a
            tiny test ViT).
        preprocessing: replaces the spec's preprocessing (hooks of convolutional maps follow its image size).
    """
    spec = get_spec(name)
    device = torch.device(device)
    source = resolve_weights(spec, weights, pretrained, seed)
    if device.type == "meta" and source.kind != "random":
        raise ValueError("device='meta' builds random weights only; use pretrained=False and no weights=")
    kwargs = {**spec.model_kwargs, **(model_kwargs or {})}
    build_device = "meta" if device.type == "meta" else "cpu"
    build_context = torch.device("meta") if build_device == "meta" else contextlib.nullcontext()
    with torch.random.fork_rng(devices=[]), build_context:
        torch.manual_seed(seed)
        backbone = spec.build(spec, source, kwargs, preprocessing or spec.preprocessing, build_device)
    return backbone.to(device) if build_device != "meta" else backbone


def library_failure(spec: BackboneSpec, source: WeightsSource, err: Exception) -> Exception:
    """The error to raise when a library fails to load pretrained weights (a download, or a file)."""
    if source.kind == "hub":
        return WeightsNotFoundError(
            f"download of {spec.library_ref} failed ({type(err).__name__}: {err}). "
            + missing_weights_message(spec.name, spec.library_ref, spec.hub_repo, spec.hub_files)
        )
    return ValueError(f"could not load {source.path} into backbone '{spec.name}' ({spec.library_ref}): {err}")


def describe_source(
    spec: BackboneSpec, source: WeightsSource, model_kwargs: dict[str, Any], version: str
) -> dict:
    """The ``source`` part of a fingerprint: library, version, architecture, kwargs, weights origin."""
    weights: dict[str, Any] = {"kind": source.kind}
    if source.kind == "random":
        weights["seed"] = source.seed
    else:
        weights["tag"] = source.tag
    return {
        "library": spec.library,
        "version": version,
        "architecture": spec.architecture,
        "model_kwargs": {
            key: value if isinstance(value, (int, float, str, bool, type(None))) else repr(value)
            for key, value in sorted(model_kwargs.items())
        },
        "weights": weights,
    }
