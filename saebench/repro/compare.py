"""Comparing a pipeline's result with its claims: a :class:`ClaimOutcome` per claim, a table, a readable diff.

Statuses: ``pass``; ``fail`` (the regenerated number disagrees with the claim); ``error`` (the claim cannot be
evaluated: its selector picks no run or several, the metric or check is absent); ``skipped`` (the tier's
requirements are missing on this machine). ``fail`` and ``error`` make ``saebench reproduce`` exit non-zero.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass

from tabulate import tabulate

from saebench.repro.claims import (
    BoundSpec,
    CheckSpec,
    Claim,
    ClaimsFileError,
    OrderingSpec,
    SelectorValue,
    ValueSpec,
)
from saebench.repro.pipeline import PipelineResult, Run

__all__ = [
    "STATUSES",
    "ClaimOutcome",
    "select_run",
    "evaluate_claim",
    "compare_claims",
    "skipped_outcomes",
    "format_number",
    "status_cell",
    "comparison_table",
    "failure_message",
]

STATUSES: tuple[str, ...] = ("pass", "fail", "error", "skipped")
FAILING: frozenset[str] = frozenset({"fail", "error"})
_MAX_LISTED_RUNS = 12


@dataclass(frozen=True)
class ClaimOutcome:
    """The comparison of one claim, with every cell already rendered (so records hold what tables show)."""

    claim: str
    kind: str
    source: str
    reported: str
    regenerated: str
    tolerance: str
    status: str
    detail: str
    file: str
    metric: str | None = None
    selector: str = ""
    regenerated_value: float | None = None
    reason: str = ""

    @property
    def failed(self) -> bool:
        return self.status in FAILING

    def to_dict(self) -> dict:
        return asdict(self)


def format_number(value: float | str | None) -> str:
    """Four significant digits; ``-`` for a missing value; strings (e.g. a stored ``nan``) as they are."""
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    return f"{value:.4g}"


def _selector_label(selector: Mapping[str, SelectorValue]) -> str:
    return ", ".join(f"{k}={selector[k]}" for k in sorted(selector)) or "(any run)"


def select_run(claim: Claim, runs: Sequence[Run], selector: Mapping[str, SelectorValue]) -> Run:
    """The one run that ``selector`` picks; otherwise a :class:`ClaimsFileError` naming the file, the claim,
    the selector and the runs that exist (or that matched, and the fields that tell them apart)."""
    matches = [run for run in runs if run.matches(selector)]
    if len(matches) == 1:
        return matches[0]
    label = _selector_label(selector)
    if not matches:
        listed = "; ".join(f"({r.label()})" for r in runs[:_MAX_LISTED_RUNS]) or "none"
        more = f" and {len(runs) - _MAX_LISTED_RUNS} more" if len(runs) > _MAX_LISTED_RUNS else ""
        raise claim.error(
            f"selector {{{label}}} matches no run; the pipeline produced {len(runs)} run(s): {listed}{more}"
        )
    keys = sorted({k for r in matches for k in r.fields})
    differing = [k for k in keys if len({repr(r.fields.get(k)) for r in matches}) > 1]
    listed = "; ".join(f"({r.label()})" for r in matches[:_MAX_LISTED_RUNS])
    raise claim.error(
        f"selector {{{label}}} matches {len(matches)} runs; add a field that tells them apart "
        f"(they differ in: {', '.join(differing) or 'nothing: duplicate runs'}): {listed}"
    )


def _metric(claim: Claim, run: Run) -> float:
    if claim.metric not in run.metrics:
        raise claim.error(
            f"run ({run.label()}) has no metric {claim.metric!r}; "
            f"its metrics: {', '.join(sorted(run.metrics)) or 'none'}"
        )
    return run.metrics[claim.metric]


def _claim_cells(claim: Claim) -> dict:
    """The cells that do not depend on the run: what is claimed, where it comes from, how close is enough."""
    spec = claim.spec
    reported, tolerance, reason = "passes", "-", ""
    if isinstance(spec, ValueSpec):
        reported, tolerance, reason = format_number(spec.value), spec.tolerance.describe(), spec.reason
    elif isinstance(spec, BoundSpec):
        reported, reason = f"{spec.op} {format_number(spec.value)}", spec.reason
    elif isinstance(spec, OrderingSpec):
        sign = "<" if spec.better_is == "lower" else ">"
        reported = f"({_selector_label(spec.better)}) {sign} ({_selector_label(spec.worse)})"
    return dict(
        claim=claim.id,
        kind=claim.kind,
        source=claim.source.describe(),
        file=claim.file,
        metric=claim.metric,
        selector=_selector_label(claim.selector) if claim.kind != "check" else "",
        reported=reported,
        tolerance=tolerance,
        reason=reason,
    )


def evaluate_claim(claim: Claim, result: PipelineResult) -> ClaimOutcome:
    """Compare one claim with the pipeline result; a bad selector or metric gives ``error``, not a raise."""
    try:
        cells = _EVALUATORS[type(claim.spec)](claim, claim.spec, result)
    except ClaimsFileError as exc:
        cells = dict(regenerated="-", status="error", detail=str(exc))
    return ClaimOutcome(**_claim_cells(claim), **cells)


def _verdict(passed: bool) -> str:
    return "pass" if passed else "fail"


def _evaluate_value(claim: Claim, spec: ValueSpec, result: PipelineResult) -> dict:
    value = _metric(claim, select_run(claim, result.runs, claim.selector))
    allowed = spec.tolerance.allowed(spec.value)
    difference = value - spec.value
    passed = math.isfinite(value) and abs(difference) <= allowed
    relation = "<=" if passed else ">"
    detail = (
        f"regenerated {value:.6g} - reported {spec.value:.6g} = {difference:+.3g}; "
        f"|difference| {relation} allowed {allowed:.3g} ({spec.tolerance.describe()})"
    )
    if not math.isfinite(value):
        detail = f"regenerated value is {value}"
    return dict(
        regenerated=format_number(value), status=_verdict(passed), detail=detail, regenerated_value=value
    )


def _evaluate_bound(claim: Claim, spec: BoundSpec, result: PipelineResult) -> dict:
    value = _metric(claim, select_run(claim, result.runs, claim.selector))
    passed = value <= spec.value if spec.op == "<=" else value >= spec.value
    verdict = "holds" if passed else "violated"
    detail = f"{claim.metric} = {value:.6g}; bound {spec.op} {spec.value:.6g} {verdict}"
    return dict(
        regenerated=format_number(value), status=_verdict(passed), detail=detail, regenerated_value=value
    )


def _evaluate_ordering(claim: Claim, spec: OrderingSpec, result: PipelineResult) -> dict:
    better_run = select_run(claim, result.runs, {**claim.selector, **spec.better})
    worse_run = select_run(claim, result.runs, {**claim.selector, **spec.worse})
    better, worse = _metric(claim, better_run), _metric(claim, worse_run)
    passed = better < worse if spec.better_is == "lower" else better > worse
    sign = "<" if better < worse else (">" if better > worse else "=")
    detail = (
        f"{claim.metric}: ({_selector_label(spec.better)}) {better:.6g} {sign} "
        f"({_selector_label(spec.worse)}) {worse:.6g}; {spec.better_is} is better"
    )
    regenerated = f"{format_number(better)} {sign} {format_number(worse)}"
    return dict(regenerated=regenerated, status=_verdict(passed), detail=detail)


def _evaluate_check(claim: Claim, spec: CheckSpec, result: PipelineResult) -> dict:
    if spec.name not in result.checks:
        raise claim.error(
            f"the pipeline reported no check named {spec.name!r}; "
            f"it reported: {', '.join(sorted(result.checks)) or 'none'}"
        )
    check = result.checks[spec.name]
    return dict(regenerated=_verdict(check.passed), status=_verdict(check.passed), detail=check.detail)


_EVALUATORS = {
    ValueSpec: _evaluate_value,
    BoundSpec: _evaluate_bound,
    OrderingSpec: _evaluate_ordering,
    CheckSpec: _evaluate_check,
}


def compare_claims(claims: Iterable[Claim], result: PipelineResult) -> list[ClaimOutcome]:
    """One outcome per claim, in the claims' order."""
    return [evaluate_claim(claim, result) for claim in claims]


def skipped_outcomes(claims: Iterable[Claim], missing: Sequence[str]) -> list[ClaimOutcome]:
    """Outcomes for claims of a tier that cannot run here; the detail names everything to supply."""
    detail = "needs " + "; ".join(missing)
    return [ClaimOutcome(**_claim_cells(c), regenerated="-", status="skipped", detail=detail) for c in claims]


def status_cell(outcome: ClaimOutcome | Mapping, not_run: bool = False) -> str:
    """``pass`` / ``FAIL`` / ``ERROR`` / ``skipped: <needs>``; ``not run`` when the whole tier did not run
    (``not_run``: the leaderboard states what the tier needs once, above its table)."""
    get = outcome.get if isinstance(outcome, Mapping) else lambda k: getattr(outcome, k)
    status = get("status")
    if status == "skipped":
        return "not run" if not_run else f"skipped: {get('detail')}"
    return {"pass": "pass", "fail": "FAIL", "error": "ERROR"}[status]


def comparison_table(
    outcomes: Sequence[ClaimOutcome | Mapping],
    tablefmt: str = "github",
    not_run: bool = False,
    with_source: bool = False,
) -> str:
    """claim | reported | regenerated | tolerance | status [| source] as a tabulate table."""
    headers = ["claim", "reported", "regenerated", "tolerance", "status"] + (
        ["source"] if with_source else []
    )
    rows = []
    for outcome in outcomes:
        get = outcome.get if isinstance(outcome, Mapping) else lambda k, o=outcome: getattr(o, k)
        row = [
            get("claim"),
            get("reported"),
            get("regenerated"),
            get("tolerance"),
            status_cell(outcome, not_run),
        ]
        rows.append(row + ([get("source")] if with_source else []))
    return tabulate(rows, headers=headers, tablefmt=tablefmt, disable_numparse=True)


def failure_message(outcome: ClaimOutcome) -> str:
    """A readable diff for a failed or errored claim: what was claimed, what we got, by how much, and where
    the claim comes from."""
    title = "FAILED" if outcome.status == "fail" else "could not be evaluated"
    lines = [f"claim {outcome.claim!r} {title} ({outcome.file})"]
    if outcome.metric:
        lines.append(f"  metric:      {outcome.metric}  [{outcome.selector}]")
    lines += [
        f"  reported:    {outcome.reported}",
        f"  regenerated: {outcome.regenerated}",
        f"  tolerance:   {outcome.tolerance}",
        *([f"  because:     {outcome.reason}"] if outcome.reason else []),
        f"  detail:      {outcome.detail}",
        f"  source:      {outcome.source}",
    ]
    return "\n".join(lines)
