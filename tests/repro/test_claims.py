"""claims.yaml validation: each kind parses; a malformed file names the file, the claim id and the problem."""

from __future__ import annotations

import textwrap

import pytest
import yaml

from saebench.repro.claims import (
    BoundSpec,
    CheckSpec,
    ClaimsFileError,
    OrderingSpec,
    ValueSpec,
    load_claims,
)
from saebench.repro.pipeline import load_reproduction


def _write(tmp_path, text: str):
    path = tmp_path / "claims.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def _one_claim_file(tmp_path, claim: dict):
    path = tmp_path / "claims.yaml"
    path.write_text(yaml.safe_dump({"paper": "demo", "claims": [claim]}, sort_keys=False))
    return path


VALUE = {
    "id": "fvu",
    "tiers": ["toy"],
    "source": "Table 1",
    "metric": "fvu",
    "selector": {"sae": "topk"},
    "value": 0.1,
    "tolerance": {"abs": 0.01},
    "tolerance_reason": "rounded to two digits",
}


def test_every_kind_parses(kit, tmp_path):
    claims = load_claims(_write(tmp_path, yaml.safe_dump({"paper": "fake", "claims": kit.claims})))
    assert claims.paper == "fake"
    by_id = {c.id: c for c in claims.claims}
    value = by_id["fvu-topk"]
    assert isinstance(value.spec, ValueSpec) and value.spec.tolerance.kind == "abs"
    assert value.spec.tolerance.allowed(0.12) == 0.05
    assert value.selector == {"sae": "topk"} and value.metric == "fvu_dataset"
    assert isinstance(by_id["cos-relu"].spec, BoundSpec) and by_id["cos-relu"].spec.op == ">="
    assert by_id["cos-relu"].source.seeds == (0, 1, 2)
    assert by_id["cos-relu"].source.describe() == "regenerated (fake; seeds 0, 1, 2)"
    ordering = by_id["topk-beats-relu"].spec
    assert (
        isinstance(ordering, OrderingSpec)
        and ordering.better == {"sae": "topk"}
        and ordering.better_is == "lower"
    )
    assert by_id["recovery"].spec == CheckSpec("recovers") and by_id["recovery"].metric is None
    assert [c.id for c in claims.for_tier("full")] == ["fvu-full"]
    # relative tolerance: 10% of |0.1| is 0.01 (abs() keeps it positive for a negative reported value)
    assert by_id["fvu-full"].spec.tolerance.allowed(-0.1) == pytest.approx(0.01)
    assert by_id["fvu-full"].spec.tolerance.describe() == "±10%"


MALFORMED = [
    # (changes to the VALUE claim, the claim id the error must name, a phrase of the problem)
    ({"colour": "red"}, "fvu", "unknown key(s) ['colour']"),
    ({"tolerance_reason": None}, "fvu", "'tolerance_reason' is required"),
    ({"tolerance_reason": "  "}, "fvu", "'tolerance_reason' is required"),
    ({"tolerance": {"abs": 0.1, "rel": 0.1}}, "fvu", "exactly one of {abs: x} or {rel: x}"),
    ({"tolerance": {"abs": -0.1}}, "fvu", "must be >= 0"),
    ({"value": "1e-3"}, "fvu", "write 1.0e-3"),
    ({"bound": {"op": "<=", "value": 1, "reason": "r"}}, "fvu", "exactly one kind key"),
    ({"tiers": ["tiny"]}, "fvu", "unknown tier(s) ['tiny']"),
    ({"tiers": []}, "fvu", "'tiers' must be a non-empty list"),
    ({"source": None}, "fvu", "'source' is required"),
    ({"source": {"regenerated": {"how": "x"}}}, "fvu", "exactly 'how' and 'seeds'"),
    ({"source": {"regenerated": {"how": "x", "seeds": []}}}, "fvu", "non-empty list of integer seeds"),
    ({"metric": None}, "fvu", "needs 'metric'"),
    ({"selector": None}, "fvu", "needs 'selector'"),
    ({"selector": "sae=topk"}, "fvu", "'selector' must be a mapping"),
    ({"selector": {"sae": ["a", "b"]}}, "fvu", "must map a field name to a scalar"),
    ({"id": "has space"}, "has space", "'id' must be a string of letters"),
]


@pytest.mark.parametrize(("change", "claim_id", "problem"), MALFORMED, ids=[m[2][:30] for m in MALFORMED])
def test_malformed_claim_names_file_id_and_problem(tmp_path, change, claim_id, problem):
    claim = {k: v for k, v in {**VALUE, **change}.items() if v is not None}
    path = _one_claim_file(tmp_path, claim)
    with pytest.raises(ClaimsFileError) as info:
        load_claims(path)
    message = str(info.value)
    assert message.startswith(f"{path}: claim {claim_id!r}: ")
    assert problem in message
    assert info.value.claim_id == claim_id and info.value.file == str(path)


def _kind_claim(**kind):
    base = {"id": "c1", "tiers": ["toy"], "source": "Fig. 1"}
    return {**base, **kind}


KIND_ERRORS = [
    (_kind_claim(check="x", metric="fvu"), "a check claim takes no 'metric'"),
    (_kind_claim(check=""), "'check' must be the name of a check"),
    (_kind_claim(check="x", tolerance={"abs": 1}), "only apply to value claims"),
    (
        _kind_claim(metric="fvu", selector={}, bound={"op": "<", "value": 1, "reason": "r"}),
        "'bound.op' must be",
    ),
    (_kind_claim(metric="fvu", selector={}, bound={"op": "<=", "value": 1}), "exactly 'op'"),
    (
        _kind_claim(metric="fvu", selector={}, bound={"op": "<=", "value": 1, "reason": ""}),
        "'bound.reason' is",
    ),
    (
        _kind_claim(metric="fvu", ordering={"better": {"a": 1}, "worse": {"a": 2}, "better_is": "smaller"}),
        "'ordering.better_is' must be 'lower' or 'higher'",
    ),
    (
        _kind_claim(metric="fvu", ordering={"better": {}, "worse": {"a": 2}, "better_is": "lower"}),
        "must each name at least one field",
    ),
    (_kind_claim(metric="fvu", bound={"op": "<=", "value": 1, "reason": "r"}), "needs 'selector'"),
    (_kind_claim(), "found none"),
]


@pytest.mark.parametrize(("claim", "problem"), KIND_ERRORS, ids=[k[1][:30] for k in KIND_ERRORS])
def test_malformed_kind_names_file_id_and_problem(tmp_path, claim, problem):
    path = _one_claim_file(tmp_path, claim)
    with pytest.raises(ClaimsFileError, match="claim 'c1'") as info:
        load_claims(path)
    assert str(path) in str(info.value) and problem in str(info.value)


def test_file_level_errors(tmp_path):
    cases = [
        ("paper: demo\nclaims: {}\n", "'claims' must be a list"),
        ("claims: []\n", "'paper' must name the reproduction"),
        ("paper: demo\nclaims: []\nextra: 1\n", "unknown top-level key(s) ['extra']"),
        ("paper: demo\nclaims: [\n", "invalid YAML"),
        ("- just a list\n", "must be a mapping"),
    ]
    for text, problem in cases:
        path = _write(tmp_path, text)
        with pytest.raises(ClaimsFileError) as info:
            load_claims(path)
        assert str(info.value).startswith(f"{path}: ") and problem in str(info.value), text


def test_duplicate_ids_and_duplicate_yaml_keys_are_refused(tmp_path):
    path = _write(tmp_path, yaml.safe_dump({"paper": "demo", "claims": [VALUE, VALUE]}))
    with pytest.raises(ClaimsFileError, match=r"claim 'fvu': duplicate claim id"):
        load_claims(path)
    # PyYAML alone would keep the second 'value' silently; the strict loader names the key and line.
    path = _write(
        tmp_path,
        """\
        paper: demo
        claims:
          - id: c1
            value: 0.1
            value: 0.2
        """,
    )
    with pytest.raises(ClaimsFileError, match=r"duplicate key 'value'.*line 5"):
        load_claims(path)


def test_missing_file_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.yaml"):
        load_claims(tmp_path / "nothere.yaml")


def test_reproduction_checks_claims_against_its_folder(kit, tmp_path):
    claims = [dict(VALUE, tiers=["toy", "mini"])]
    folder = kit.write(tmp_path, "demo", claims, {"toy": kit.toy})
    with pytest.raises(ClaimsFileError, match=r"claim 'fvu': applies to tier 'mini' but .*configs/mini.yaml"):
        load_reproduction(folder).claims()
    (folder / "claims.yaml").write_text(yaml.safe_dump({"paper": "other", "claims": []}))
    with pytest.raises(ClaimsFileError, match=r"'paper: other' does not match the folder name 'demo'"):
        load_reproduction(folder).claims()
