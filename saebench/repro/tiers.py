"""Tiers (toy / mini / full) and the requirements a tier config declares.

A reproduction's ``configs/<tier>.yaml`` is a mapping handed to its pipeline. The one key the harness reads
itself is ``requires``: a list of what the tier needs from the machine (see ``docs/tiers.md``)::

    requires:
      - kind: file                      # or dir
        name: clip_weights              # the key the pipeline looks the resolved path up by
        what: open_clip ViT-L/14 weights (.safetensors)
        env: SAEBENCH_CLIP_VITL14       # the variable that holds the path
        default: ~/.cache/saebench/clip-vit-l14.safetensors   # optional
      - kind: gpu
        what: a CUDA GPU with >= 24 GiB

When something is missing, every claim of that tier is skipped with a reason naming exactly what to supply.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "TIERS",
    "DEFAULT_TIER",
    "REQUIREMENT_KINDS",
    "Requirement",
    "RequirementError",
    "MissingRequirement",
    "check_tier",
    "parse_requirements",
    "missing_requirements",
    "requirement_paths",
]

TIERS: tuple[str, ...] = ("toy", "mini", "full")
DEFAULT_TIER = "toy"
REQUIREMENT_KINDS: tuple[str, ...] = ("file", "dir", "gpu")
_REQUIREMENT_KEYS = {"kind", "name", "what", "env", "default"}


class RequirementError(ValueError):
    """A malformed ``requires`` entry in a tier config."""


class MissingRequirement(Exception):
    """Raised by a pipeline that finds at run time that something it needs is absent (data found in one of
    several places, say). The harness skips the tier's claims with this message, which must name what to
    supply and how."""


def check_tier(tier: str) -> str:
    """Return ``tier`` if it is one of :data:`TIERS`, else raise ``ValueError`` listing them."""
    if tier not in TIERS:
        raise ValueError(f"unknown tier {tier!r}; choose one of {', '.join(TIERS)}")
    return tier


@dataclass(frozen=True)
class Requirement:
    """One thing a tier needs. ``file``/``dir``: a path read from ``env`` (or ``default``); ``gpu``: CUDA."""

    kind: str
    what: str
    name: str | None = None
    env: str | None = None
    default: str | None = None

    def path(self) -> Path | None:
        """The configured path (``$env`` first, then ``default``), or None when neither is set."""
        raw = os.environ.get(self.env) if self.env else None
        raw = raw or self.default
        return Path(raw).expanduser() if raw else None

    def missing_reason(self) -> str | None:
        """None when satisfied; otherwise what is missing and how to supply it."""
        if self.kind == "gpu":
            import torch

            if torch.cuda.is_available():
                return None
            return f"{self.what} (torch.cuda.is_available() is False on this machine)"
        path = self.path()
        exists = path is not None and (path.is_file() if self.kind == "file" else path.is_dir())
        if exists:
            return None
        how = f"set {self.env} to its path"
        if path is None:
            return f"{self.what}: {how} ({self.env} is not set)"
        source = f"{self.env}={path}" if os.environ.get(self.env) else f"default {path}"
        return f"{self.what}: {how} ({source} is not an existing {self.kind})"


def parse_requirements(config: Mapping[str, Any], where: str) -> list[Requirement]:
    """Read and validate ``config['requires']``; ``where`` names the config file in errors."""
    entries = config.get("requires", [])
    if not isinstance(entries, list):
        raise RequirementError(
            f"{where}: 'requires' must be a list of mappings, got {type(entries).__name__}"
        )
    requirements = []
    for i, entry in enumerate(entries):
        label = f"{where}: requires[{i}]"
        if not isinstance(entry, Mapping):
            raise RequirementError(f"{label} must be a mapping with kind/what/..., got {entry!r}")
        unknown = set(entry) - _REQUIREMENT_KEYS
        if unknown:
            raise RequirementError(
                f"{label}: unknown key(s) {sorted(unknown)}; allowed keys: {sorted(_REQUIREMENT_KEYS)}"
            )
        kind = entry.get("kind")
        if kind not in REQUIREMENT_KINDS:
            raise RequirementError(f"{label}: kind {kind!r} is not one of {', '.join(REQUIREMENT_KINDS)}")
        if not isinstance(entry.get("what"), str) or not entry["what"].strip():
            raise RequirementError(f"{label}: 'what' must say what is needed, in words")
        if kind in ("file", "dir"):
            for key in ("name", "env"):
                if not isinstance(entry.get(key), str) or not entry[key]:
                    raise RequirementError(f"{label}: a {kind} requirement needs '{key}'")
        requirements.append(Requirement(**{k: entry.get(k) for k in _REQUIREMENT_KEYS}))
    return requirements


def missing_requirements(config: Mapping[str, Any], where: str = "config") -> list[str]:
    """One line per unmet requirement of ``config`` (empty when the tier can run here)."""
    reasons = (r.missing_reason() for r in parse_requirements(config, where))
    return [reason for reason in reasons if reason is not None]


def requirement_paths(config: Mapping[str, Any]) -> dict[str, Path]:
    """The resolved path of every ``file``/``dir`` requirement, keyed by its ``name``.

    Pipelines call this to find user-supplied weights and data; it raises ``FileNotFoundError`` naming
    what to supply if a path is unset (the harness skips the tier before that can happen)."""
    paths = {}
    for requirement in parse_requirements(config, "config"):
        if requirement.kind == "gpu":
            continue
        reason = requirement.missing_reason()
        if reason is not None:
            raise FileNotFoundError(f"needs {reason}")
        paths[requirement.name] = requirement.path()
    return paths
