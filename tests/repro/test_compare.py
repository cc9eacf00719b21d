"""Evaluating claims against a pipeline result: each kind passing and failing, selector errors, the diff."""

from __future__ import annotations

import math

import pytest

from saebench.repro.claims import parse_claims
from saebench.repro.compare import (
    compare_claims,
    comparison_table,
    evaluate_claim,
    failure_message,
    select_run,
    skipped_outcomes,
)
from saebench.repro.pipeline import CheckResult, PipelineResult, Run

FILE = "reproductions/demo/claims.yaml"


def _claim(**fields):
    entry = {"id": "c", "tiers": ["toy"], "source": "Table 2", **fields}
    return parse_claims({"paper": "demo", "claims": [entry]}, FILE).claims[0]


def _result(kit, checks=None):
    runs = [Run(**r) for r in kit.runs]
    return PipelineResult(runs=runs, checks=checks or {})


def _value(value, tolerance):
    return _claim(
        metric="fvu_dataset",
        selector={"sae": "topk"},
        value=value,
        tolerance=tolerance,
        tolerance_reason="seed spread 0.01 over 3 seeds",
    )


@pytest.mark.parametrize(
    ("value", "tolerance", "status"),
    [
        # regenerated topk fvu is 0.10 (conftest FAKE_RUNS)
        (0.12, {"abs": 0.03}, "pass"),  # |0.10 - 0.12| = 0.02 <= 0.03
        (0.12, {"abs": 0.01}, "fail"),  # 0.02 > 0.01
        (0.105, {"rel": 0.1}, "pass"),  # allowed 0.1 * 0.105 = 0.0105 >= 0.005
        (0.125, {"rel": 0.1}, "fail"),  # allowed 0.0125 < 0.025
    ],
)
def test_value_claim(kit, value, tolerance, status):
    outcome = evaluate_claim(_value(value, tolerance), _result(kit))
    assert outcome.status == status
    assert outcome.regenerated_value == 0.10 and outcome.regenerated == "0.1"
    assert outcome.reported == f"{value:.4g}"


def test_value_claim_on_nan_fails(kit):
    result = _result(kit)
    result.runs[0].metrics["fvu_dataset"] = math.nan
    outcome = evaluate_claim(_value(0.1, {"abs": 1.0}), result)
    assert outcome.status == "fail" and "nan" in outcome.detail


@pytest.mark.parametrize(
    ("op", "bound", "status"),
    [
        ("<=", 0.15, "pass"),
        ("<=", 0.05, "fail"),
        (">=", 0.05, "pass"),
        (">=", 0.15, "fail"),
        ("<=", 0.10, "pass"),
    ],
)
def test_bound_claim(kit, op, bound, status):
    claim = _claim(
        metric="fvu_dataset", selector={"sae": "topk"}, bound={"op": op, "value": bound, "reason": "r"}
    )
    outcome = evaluate_claim(claim, _result(kit))
    assert outcome.status == status
    assert outcome.reported == f"{op} {bound:.4g}"


@pytest.mark.parametrize(
    ("metric", "better", "worse", "better_is", "status"),
    [
        ("fvu_dataset", "topk", "relu", "lower", "pass"),  # 0.10 < 0.20
        ("fvu_dataset", "relu", "topk", "lower", "fail"),
        ("cosine_similarity_mean", "topk", "relu", "higher", "pass"),  # 0.95 > 0.90
        ("cosine_similarity_mean", "relu", "topk", "higher", "fail"),
    ],
)
def test_ordering_claim(kit, metric, better, worse, better_is, status):
    claim = _claim(
        metric=metric,
        selector={"k": 8},
        ordering={"better": {"sae": better}, "worse": {"sae": worse}, "better_is": better_is},
    )
    outcome = evaluate_claim(claim, _result(kit))
    assert outcome.status == status
    assert better in outcome.detail and worse in outcome.detail


def test_ordering_ties_fail(kit):
    result = _result(kit)
    result.runs[1].metrics["fvu_dataset"] = result.runs[0].metrics["fvu_dataset"]
    claim = _claim(
        metric="fvu_dataset",
        ordering={"better": {"sae": "topk"}, "worse": {"sae": "relu"}, "better_is": "lower"},
    )
    outcome = evaluate_claim(claim, result)
    assert outcome.status == "fail" and outcome.regenerated == "0.1 = 0.1"


def test_check_claim(kit):
    claim = _claim(check="recovers")
    passed = evaluate_claim(claim, _result(kit, {"recovers": CheckResult(True, "MCC 0.97")}))
    failed = evaluate_claim(claim, _result(kit, {"recovers": CheckResult(False, "MCC 0.42 < 0.9")}))
    missing = evaluate_claim(claim, _result(kit, {"other": CheckResult(True, "")}))
    assert (passed.status, failed.status, missing.status) == ("pass", "fail", "error")
    assert failed.detail == "MCC 0.42 < 0.9"
    assert "no check named 'recovers'; it reported: other" in missing.detail and FILE in missing.detail


def test_selector_matching_no_run_lists_the_runs(kit):
    claim = _claim(
        metric="fvu_dataset", selector={"sae": "jumprelu"}, bound={"op": "<=", "value": 1, "reason": "r"}
    )
    outcome = evaluate_claim(claim, _result(kit))
    assert outcome.status == "error"
    assert outcome.detail.startswith(f"{FILE}: claim 'c': selector {{sae=jumprelu}} matches no run")
    assert "(k=8, sae=topk); (k=8, sae=relu)" in outcome.detail


def test_selector_matching_several_runs_names_the_differing_fields(kit):
    claim = _claim(metric="fvu_dataset", selector={"k": 8}, bound={"op": "<=", "value": 1, "reason": "r"})
    with pytest.raises(ValueError, match=r"claim 'c': selector \{k=8\} matches 2 runs; .*differ in: sae"):
        select_run(claim, _result(kit).runs, claim.selector)
    assert evaluate_claim(claim, _result(kit)).status == "error"


def test_selector_values_compare_as_numbers_but_not_across_types(kit):
    runs = _result(kit).runs
    claim = _claim(
        metric="fvu_dataset",
        selector={"k": 8.0, "sae": "topk"},
        bound={"op": "<=", "value": 1, "reason": "r"},
    )
    assert select_run(claim, runs, claim.selector) is runs[0]  # YAML 8.0 picks the run with k=8
    with pytest.raises(ValueError, match="matches no run"):
        select_run(claim, runs, {"k": "8"})  # the string "8" is not the number 8


def test_missing_metric_is_an_error_naming_the_metrics(kit):
    claim = _claim(metric="mcc", selector={"sae": "topk"}, bound={"op": ">=", "value": 0.9, "reason": "r"})
    outcome = evaluate_claim(claim, _result(kit))
    assert outcome.status == "error"
    assert (
        "has no metric 'mcc'; its metrics: cosine_similarity_mean, dead_fraction, fvu_dataset, l0"
        in outcome.detail
    )


def test_failure_message_is_a_readable_diff(kit):
    outcome = evaluate_claim(_value(0.12, {"abs": 0.01}), _result(kit))
    message = failure_message(outcome)
    assert message.splitlines() == [
        f"claim 'c' FAILED ({FILE})",
        "  metric:      fvu_dataset  [sae=topk]",
        "  reported:    0.12",
        "  regenerated: 0.1",
        "  tolerance:   ±0.01",
        "  because:     seed spread 0.01 over 3 seeds",
        "  detail:      regenerated 0.1 - reported 0.12 = -0.02; |difference| > allowed 0.01 (±0.01)",
        "  source:      Table 2",
    ]


def test_comparison_table_and_skips(kit):
    claims = [_value(0.12, {"abs": 0.01}), _claim(check="recovers")]
    outcomes = compare_claims(claims[:1], _result(kit)) + skipped_outcomes(claims[1:], ["a GPU", "weights"])
    table = comparison_table(outcomes)
    header, _, fail_row, skip_row = table.splitlines()
    assert [c.strip() for c in header.strip("|").split("|")] == [
        "claim",
        "reported",
        "regenerated",
        "tolerance",
        "status",
    ]
    assert "| FAIL " in fail_row and "±0.01" in fail_row
    assert "skipped: needs a GPU; weights" in skip_row
    not_run = comparison_table([o.to_dict() for o in outcomes], not_run=True, with_source=True)
    # the tier's needs are stated once above the table, not repeated in every row
    assert "| not run " in not_run and "needs a GPU" not in not_run and "Table 2" in not_run
