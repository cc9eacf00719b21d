"""The protocol a paper pipeline implements, and discovery of ``reproductions/<paper>/`` folders.

A reproduction folder holds ``claims.yaml``, ``configs/<tier>.yaml`` and ``pipeline.py``. The pipeline
module defines one function::

    def run(tier: str, config: dict, seed: int, workdir: Path) -> PipelineResult: ...

It composes library calls (cache, train, eval) and returns every run it produced — each run is a set of
selector ``fields`` (``sae``, ``k``, ``backbone``, ...) plus its ``metrics`` — and the results of the named
checks its claims refer to. The harness (:mod:`saebench.repro.runner`) does the rest.

Fields and metrics the leaderboard's cross-paper SAE table reads (use these names where they apply; the
metric names are those of :func:`saebench.evaluate.evaluate_sae`): fields ``sae`` (the architecture) and
``backbone``; metrics ``fvu_dataset``, ``cosine_similarity_mean``, ``l0`` (mean count of active latents),
``dead_fraction`` (0..1) and ``probe_accuracy``. Paper-specific definitions go under their own names.
"""

from __future__ import annotations

import importlib.util
import math
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

from saebench.repro.claims import ClaimsFile, ClaimsFileError, SelectorValue, load_claims
from saebench.repro.tiers import TIERS, check_tier
from saebench.repro.yamlfile import load_yaml

__all__ = [
    "Run",
    "CheckResult",
    "PipelineResult",
    "Pipeline",
    "Reproduction",
    "ReproductionError",
    "load_reproduction",
    "discover_reproductions",
    "default_reproductions_root",
    "display_path",
]


class ReproductionError(ValueError):
    """A reproduction folder that is incomplete or inconsistent, or a pipeline that broke its contract."""


@dataclass(frozen=True)
class Run:
    """One trained/evaluated configuration: scalar selector ``fields`` and float ``metrics``."""

    fields: Mapping[str, SelectorValue]
    metrics: Mapping[str, float]

    def __post_init__(self) -> None:
        for key, value in self.fields.items():
            if not isinstance(key, str) or not isinstance(value, (str, int, float, bool)):
                raise TypeError(f"run field {key!r}={value!r} must be a scalar (str, int, float, bool)")
        metrics = {}
        for key, value in self.metrics.items():
            try:
                metrics[key] = float(value)
            except (TypeError, ValueError):
                raise TypeError(
                    f"run {dict(self.fields)}: metric {key!r}={value!r} is not a number"
                ) from None
        object.__setattr__(self, "fields", dict(self.fields))
        object.__setattr__(self, "metrics", metrics)

    def matches(self, selector: Mapping[str, SelectorValue]) -> bool:
        """Every selector key is a field with an equal value (numbers compare as numbers)."""
        return all(key in self.fields and _same(self.fields[key], value) for key, value in selector.items())

    def label(self) -> str:
        """``k=v, ...`` over the fields, in sorted key order."""
        return ", ".join(f"{k}={self.fields[k]}" for k in sorted(self.fields))


def _same(a: SelectorValue, b: SelectorValue) -> bool:
    numeric = (int, float)
    if (
        isinstance(a, numeric)
        and isinstance(b, numeric)
        and not isinstance(a, bool)
        and not isinstance(b, bool)
    ):
        return math.isclose(float(a), float(b), rel_tol=1e-12, abs_tol=0.0)
    return type(a) is type(b) and a == b


@dataclass(frozen=True)
class CheckResult:
    """Outcome of a named check the pipeline implements: pass/fail and a readable detail."""

    passed: bool
    detail: str


@dataclass(frozen=True)
class PipelineResult:
    """What :func:`run` returns: every run, every named check, and (optionally) the device it computed on
    (default: ``cuda:<name>`` when a GPU is visible, else ``cpu``)."""

    runs: list[Run]
    checks: dict[str, CheckResult] = field(default_factory=dict)
    device: str | None = None

    def __post_init__(self) -> None:
        if not all(isinstance(r, Run) for r in self.runs):
            raise TypeError("PipelineResult.runs must be a list of Run")
        if not all(isinstance(c, CheckResult) for c in self.checks.values()):
            raise TypeError("PipelineResult.checks must map check names to CheckResult")


class Pipeline(Protocol):
    """The shape of a ``pipeline.py`` module."""

    def run(self, tier: str, config: dict[str, Any], seed: int, workdir: Path) -> PipelineResult: ...


@dataclass(frozen=True)
class Reproduction:
    """A ``reproductions/<paper>/`` folder: its claims, tier configs and pipeline."""

    folder: Path

    @property
    def name(self) -> str:
        return self.folder.name

    @property
    def claims_path(self) -> Path:
        return self.folder / "claims.yaml"

    def config_path(self, tier: str) -> Path:
        return self.folder / "configs" / f"{check_tier(tier)}.yaml"

    def claims(self) -> ClaimsFile:
        """Load and validate ``claims.yaml``, and check it against this folder (name, tier configs)."""
        claims = load_claims(display_path(self.claims_path))
        if claims.paper != self.name:
            raise ClaimsFileError(
                display_path(self.claims_path),
                None,
                f"'paper: {claims.paper}' does not match the folder name {self.name!r}",
            )
        for claim in claims.claims:
            for tier in claim.tiers:
                if not self.config_path(tier).is_file():
                    raise claim.error(
                        f"applies to tier {tier!r} but {display_path(self.config_path(tier))} does not exist"
                    )
        return claims

    def tiers(self) -> list[str]:
        """The tiers this reproduction has a config for, in tier order."""
        return [t for t in TIERS if self.config_path(t).is_file()]

    def config(self, tier: str) -> dict[str, Any]:
        """The tier config as written (``requires`` included)."""
        path = self.config_path(tier)
        if not path.is_file():
            have = ", ".join(self.tiers()) or "none"
            raise FileNotFoundError(
                f"{self.name} has no {tier} tier: {path} does not exist (tiers here: {have})"
            )
        data = load_yaml(path)
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ReproductionError(f"{path}: a tier config must be a mapping, got {type(data).__name__}")
        return data

    def pipeline(self) -> ModuleType:
        """Import ``pipeline.py`` afresh as ``saebench_reproductions.<paper>.pipeline``: papers never
        collide, and ``from . import helpers`` finds a sibling ``helpers.py``."""
        path = self.folder / "pipeline.py"
        if not path.is_file():
            raise ReproductionError(
                f"{self.folder} has no pipeline.py (it must define run(tier, config, seed, workdir))"
            )
        package = register_reproduction_package(self.name, self.folder)
        module_name = f"{package}.pipeline"
        spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[module_name]
            raise
        if not callable(getattr(module, "run", None)):
            raise ReproductionError(f"{path} must define run(tier, config, seed, workdir) -> PipelineResult")
        return module


REPRODUCTIONS_PACKAGE = "saebench_reproductions"


def register_reproduction_package(paper: str, folder: Path) -> str:
    """Register ``saebench_reproductions.<paper>`` as a package rooted at ``folder``; return its name."""
    root = REPRODUCTIONS_PACKAGE
    if root not in sys.modules:
        sys.modules[root] = _package(root, [])
    name = f"{root}.{paper}"
    sys.modules[name] = _package(name, [str(folder)])
    return name


def _package(name: str, path: list[str]) -> ModuleType:
    module = ModuleType(name)
    module.__path__ = path
    return module


def load_reproduction(folder: str | Path) -> Reproduction:
    """A :class:`Reproduction` for ``folder``; it must contain ``claims.yaml``."""
    folder = Path(folder).resolve()
    if not (folder / "claims.yaml").is_file():
        raise ReproductionError(f"{folder} is not a reproduction: {folder / 'claims.yaml'} does not exist")
    return Reproduction(folder)


def discover_reproductions(root: str | Path) -> list[Reproduction]:
    """Every ``<root>/<paper>/`` holding a ``claims.yaml``, sorted by name."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"reproductions folder {root} does not exist (pass --reproductions DIR)")
    return [Reproduction(p.resolve()) for p in sorted(root.iterdir()) if (p / "claims.yaml").is_file()]


def display_path(path: Path) -> Path:
    """``path`` relative to the working directory when inside it (short, machine-independent messages)."""
    try:
        return path.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        return path


def default_reproductions_root() -> Path:
    """``./reproductions`` when it exists, else the one beside the saebench package (an editable checkout)."""
    here = Path.cwd() / "reproductions"
    if here.is_dir():
        return here
    return Path(__file__).resolve().parents[2] / "reproductions"
