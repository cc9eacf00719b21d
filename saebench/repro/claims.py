"""Claims: the rows of a paper's results that a reproduction checks, read from ``claims.yaml``.

The format is specified in ``docs/claims-format.md``. Every claim has an ``id``, the ``tiers`` it applies to,
a ``source`` (where the paper reports it, or how and with which seeds we regenerated it) and exactly one
kind:

- ``value`` + ``tolerance`` (``abs`` or ``rel``) + ``tolerance_reason``: the regenerated ``metric`` of the run
  picked by ``selector`` lies within the tolerance of the reported value;
- ``bound`` (``op`` ``<=``/``>=``, ``value``, ``reason``): the regenerated metric satisfies the inequality;
- ``ordering`` (``better``/``worse`` selectors, ``better_is`` ``lower``/``higher``): on ``metric`` the run
  picked by ``better`` beats the run picked by ``worse`` (the claim's ``selector`` is merged into both);
- ``check``: the name of a check the pipeline implements and reports as pass/fail with a detail.

Loading validates everything; a problem raises :class:`ClaimsFileError` naming the file, the claim and
what is wrong.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from saebench.repro.tiers import TIERS
from saebench.repro.yamlfile import load_yaml

__all__ = [
    "CLAIM_KINDS",
    "ClaimsFileError",
    "Source",
    "Tolerance",
    "ValueSpec",
    "BoundSpec",
    "OrderingSpec",
    "CheckSpec",
    "Claim",
    "ClaimsFile",
    "load_claims",
    "parse_claims",
]

CLAIM_KINDS: tuple[str, ...] = ("value", "bound", "ordering", "check")
SelectorValue = str | int | float | bool
_CLAIM_KEYS = {
    "id",
    "description",
    "tiers",
    "source",
    "metric",
    "selector",
    "tolerance",
    "tolerance_reason",
    *CLAIM_KINDS,
}
_FILE_KEYS = {"paper", "claims"}
_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


class ClaimsFileError(ValueError):
    """A malformed claims file, or a claim whose selector does not pick exactly one run."""

    def __init__(self, file: str | Path, claim_id: str | None, problem: str):
        self.file, self.claim_id, self.problem = str(file), claim_id, problem
        where = f"{file}: claim {claim_id!r}" if claim_id is not None else str(file)
        super().__init__(f"{where}: {problem}")


@dataclass(frozen=True)
class Source:
    """Where a claimed number comes from: a paper location, or how (with which seeds) we regenerated it."""

    paper: str | None = None
    regenerated_how: str | None = None
    seeds: tuple[int, ...] = ()

    def describe(self) -> str:
        if self.paper is not None:
            return self.paper
        seeds = ", ".join(str(s) for s in self.seeds)
        return f"regenerated ({self.regenerated_how}; seeds {seeds})"


@dataclass(frozen=True)
class Tolerance:
    """``abs``: allowed |regenerated - reported|; ``rel``: allowed fraction of |reported|."""

    kind: str
    amount: float

    def allowed(self, reported: float) -> float:
        return self.amount if self.kind == "abs" else self.amount * abs(reported)

    def describe(self) -> str:
        return f"±{self.amount:g}" if self.kind == "abs" else f"±{self.amount * 100:g}%"


@dataclass(frozen=True)
class ValueSpec:
    value: float
    tolerance: Tolerance
    reason: str


@dataclass(frozen=True)
class BoundSpec:
    op: str
    value: float
    reason: str


@dataclass(frozen=True)
class OrderingSpec:
    better: Mapping[str, SelectorValue]
    worse: Mapping[str, SelectorValue]
    better_is: str


@dataclass(frozen=True)
class CheckSpec:
    name: str


Spec = ValueSpec | BoundSpec | OrderingSpec | CheckSpec


@dataclass(frozen=True)
class Claim:
    """One validated claim. ``file`` is the claims file it came from (for error messages)."""

    id: str
    tiers: tuple[str, ...]
    source: Source
    kind: str
    spec: Spec
    file: str
    metric: str | None = None
    selector: Mapping[str, SelectorValue] = field(default_factory=dict)
    description: str | None = None

    def applies_to(self, tier: str) -> bool:
        return tier in self.tiers

    def error(self, problem: str) -> ClaimsFileError:
        """An error about this claim, naming its file and id."""
        return ClaimsFileError(self.file, self.id, problem)


@dataclass(frozen=True)
class ClaimsFile:
    """A parsed ``claims.yaml``: the paper's name and its claims in file order."""

    path: str
    paper: str
    claims: tuple[Claim, ...]

    def for_tier(self, tier: str) -> list[Claim]:
        return [c for c in self.claims if c.applies_to(tier)]

    def tiers_used(self) -> set[str]:
        return {t for c in self.claims for t in c.tiers}


def load_claims(path: str | Path) -> ClaimsFile:
    """Read and validate a claims file. Raises :class:`ClaimsFileError` (or ``FileNotFoundError``)."""
    path = Path(path)
    try:
        data = load_yaml(path)
    except ValueError as exc:
        raise ClaimsFileError(path, None, str(exc).removeprefix(f"{path}: ")) from None
    return parse_claims(data, path)


def parse_claims(data: Any, path: str | Path) -> ClaimsFile:
    """Validate already-parsed YAML ``data``; ``path`` is used in error messages."""
    if not isinstance(data, Mapping):
        raise ClaimsFileError(path, None, "the file must be a mapping with keys 'paper' and 'claims'")
    unknown = set(data) - _FILE_KEYS
    if unknown:
        raise ClaimsFileError(
            path, None, f"unknown top-level key(s) {sorted(unknown)}; allowed: {sorted(_FILE_KEYS)}"
        )
    paper = data.get("paper")
    if not isinstance(paper, str) or not paper:
        raise ClaimsFileError(path, None, "'paper' must name the reproduction (its folder name)")
    entries = data.get("claims")
    if not isinstance(entries, list):
        raise ClaimsFileError(path, None, "'claims' must be a list of claims")
    claims: list[Claim] = []
    seen: set[str] = set()
    for index, entry in enumerate(entries):
        claim = _ClaimParser(path, index, entry).parse()
        if claim.id in seen:
            raise ClaimsFileError(path, claim.id, "duplicate claim id; ids must be unique within a file")
        seen.add(claim.id)
        claims.append(claim)
    return ClaimsFile(path=str(path), paper=paper, claims=tuple(claims))


class _ClaimParser:
    """Validates one claim entry; every error names the file and the claim id (or its position)."""

    def __init__(self, path: str | Path, index: int, entry: Any):
        self.path, self.entry = path, entry
        self.id: str = f"#{index + 1}"
        if isinstance(entry, Mapping) and isinstance(entry.get("id"), str) and entry["id"]:
            self.id = entry["id"]

    def fail(self, problem: str) -> ClaimsFileError:
        return ClaimsFileError(self.path, self.id, problem)

    def parse(self) -> Claim:
        entry = self.entry
        if not isinstance(entry, Mapping):
            raise self.fail(f"a claim must be a mapping, got {type(entry).__name__}")
        unknown = set(entry) - _CLAIM_KEYS
        if unknown:
            raise self.fail(f"unknown key(s) {sorted(unknown)}; allowed keys: {sorted(_CLAIM_KEYS)}")
        if not isinstance(entry.get("id"), str) or not _ID_PATTERN.match(entry["id"]):
            raise self.fail(
                "'id' must be a string of letters, digits, '_', '-', '.' (it names the test case)"
            )
        kinds = [k for k in CLAIM_KINDS if k in entry]
        if len(kinds) != 1:
            found = f"found {kinds}" if kinds else "found none"
            raise self.fail(f"a claim needs exactly one kind key of {list(CLAIM_KINDS)}; {found}")
        kind = kinds[0]
        if kind != "value" and ("tolerance" in entry or "tolerance_reason" in entry):
            raise self.fail(
                f"'tolerance'/'tolerance_reason' only apply to value claims, this is a {kind} claim"
            )
        description = entry.get("description")
        if description is not None and not isinstance(description, str):
            raise self.fail("'description' must be a string")
        metric, selector = self._metric_and_selector(kind)
        return Claim(
            id=entry["id"],
            tiers=self._tiers(),
            source=self._source(),
            kind=kind,
            spec=getattr(self, f"_{kind}_spec")(),
            file=str(self.path),
            metric=metric,
            selector=selector,
            description=description,
        )

    # ------------------------------------------------------------------ common fields
    def _tiers(self) -> tuple[str, ...]:
        tiers = self.entry.get("tiers")
        if not isinstance(tiers, list) or not tiers:
            raise self.fail(f"'tiers' must be a non-empty list drawn from {list(TIERS)}")
        bad = [t for t in tiers if t not in TIERS]
        if bad:
            raise self.fail(f"unknown tier(s) {bad}; tiers are {list(TIERS)}")
        return tuple(t for t in TIERS if t in tiers)

    def _source(self) -> Source:
        source = self.entry.get("source")
        if isinstance(source, str) and source.strip():
            return Source(paper=source.strip())
        if isinstance(source, Mapping) and set(source) == {"regenerated"}:
            regenerated = source["regenerated"]
            if not isinstance(regenerated, Mapping) or set(regenerated) != {"how", "seeds"}:
                raise self.fail("'source: regenerated' must be a mapping with exactly 'how' and 'seeds'")
            how, seeds = regenerated["how"], regenerated["seeds"]
            if not isinstance(how, str) or not how.strip():
                raise self.fail("'source: regenerated: how' must say how the number was regenerated")
            if not isinstance(seeds, list) or not seeds or not all(_is_int(s) for s in seeds):
                raise self.fail("'source: regenerated: seeds' must be a non-empty list of integer seeds")
            return Source(regenerated_how=how.strip(), seeds=tuple(seeds))
        raise self.fail(
            "'source' is required: a string naming the paper's table/section/figure, "
            "or {regenerated: {how: ..., seeds: [...]}} for a number we regenerated ourselves"
        )

    def _metric_and_selector(self, kind: str) -> tuple[str | None, dict[str, SelectorValue]]:
        entry = self.entry
        if kind == "check":
            for key in ("metric", "selector"):
                if key in entry:
                    raise self.fail(
                        f"a check claim takes no '{key}': the pipeline's check reports its own detail"
                    )
            return None, {}
        metric = entry.get("metric")
        if not isinstance(metric, str) or not metric:
            raise self.fail(f"a {kind} claim needs 'metric' (the name of a metric the pipeline reports)")
        required = kind != "ordering"
        if required and "selector" not in entry:
            raise self.fail(f"a {kind} claim needs 'selector' (field: value pairs that pick one run)")
        return metric, self._selector(entry.get("selector", {}), "selector")

    def _selector(self, selector: Any, name: str) -> dict[str, SelectorValue]:
        if not isinstance(selector, Mapping):
            raise self.fail(f"'{name}' must be a mapping of run field -> value, got {selector!r}")
        for key, value in selector.items():
            if not isinstance(key, str) or not isinstance(value, (str, int, float, bool)):
                raise self.fail(f"'{name}' entry {key!r}: {value!r} must map a field name to a scalar")
        return dict(selector)

    def _number(self, value: Any, name: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            hint = ""
            if isinstance(value, str):
                hint = " (YAML reads exponents without a dot, like 1e-3, as strings: write 1.0e-3)"
            raise self.fail(f"'{name}' must be a number, got {value!r}{hint}")
        if not math.isfinite(value):
            raise self.fail(f"'{name}' must be finite, got {value!r}")
        return float(value)

    def _reason(self, value: Any, name: str) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.fail(
                f"'{name}' is required: say why this tolerance/bound is right "
                "(rounding of the reported number, seed spread we measured, a known difference)"
            )
        return value.strip()

    # --------------------------------------------------------------------- the kinds
    def _value_spec(self) -> ValueSpec:
        entry = self.entry
        value = self._number(entry["value"], "value")
        tolerance = entry.get("tolerance")
        if not isinstance(tolerance, Mapping) or len(tolerance) != 1 or set(tolerance) - {"abs", "rel"}:
            raise self.fail("a value claim needs 'tolerance' with exactly one of {abs: x} or {rel: x}")
        [(tol_kind, amount)] = tolerance.items()
        amount = self._number(amount, f"tolerance.{tol_kind}")
        if amount < 0:
            raise self.fail(f"'tolerance.{tol_kind}' must be >= 0, got {amount}")
        reason = self._reason(entry.get("tolerance_reason"), "tolerance_reason")
        return ValueSpec(value=value, tolerance=Tolerance(tol_kind, amount), reason=reason)

    def _bound_spec(self) -> BoundSpec:
        bound = self.entry["bound"]
        if not isinstance(bound, Mapping) or set(bound) != {"op", "value", "reason"}:
            raise self.fail(
                "'bound' must be a mapping with exactly 'op' ('<=' or '>='), 'value' and 'reason'"
            )
        if bound["op"] not in ("<=", ">="):
            raise self.fail(f"'bound.op' must be '<=' or '>=', got {bound['op']!r}")
        return BoundSpec(
            op=bound["op"],
            value=self._number(bound["value"], "bound.value"),
            reason=self._reason(bound["reason"], "bound.reason"),
        )

    def _ordering_spec(self) -> OrderingSpec:
        ordering = self.entry["ordering"]
        if not isinstance(ordering, Mapping) or set(ordering) != {"better", "worse", "better_is"}:
            raise self.fail(
                "'ordering' must be a mapping with exactly 'better', 'worse' (selectors) "
                "and 'better_is' ('lower' or 'higher')"
            )
        if ordering["better_is"] not in ("lower", "higher"):
            raise self.fail(
                f"'ordering.better_is' must be 'lower' or 'higher', got {ordering['better_is']!r}"
            )
        better = self._selector(ordering["better"], "ordering.better")
        worse = self._selector(ordering["worse"], "ordering.worse")
        if not better or not worse:
            raise self.fail("'ordering.better' and 'ordering.worse' must each name at least one field")
        return OrderingSpec(better=better, worse=worse, better_is=ordering["better_is"])

    def _check_spec(self) -> CheckSpec:
        name = self.entry["check"]
        if not isinstance(name, str) or not name:
            raise self.fail("'check' must be the name of a check the pipeline implements")
        return CheckSpec(name=name)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
