"""Run records (schema, determinism, hashing) and the runner that writes them."""

from __future__ import annotations

import json
import math

import pytest
import torch

import saebench
from saebench.repro.pipeline import ReproductionError, load_reproduction
from saebench.repro.records import (
    RECORD_KEYS,
    SCHEMA_VERSION,
    RecordError,
    config_hash,
    dump_json,
    read_record,
    read_records,
    record_path,
    write_record,
)
from saebench.repro.runner import run_reproduction


def test_record_of_a_run_follows_the_schema(fake_root, tmp_path):
    report = run_reproduction(
        load_reproduction(fake_root / "fake"), "toy", seed=3, results_dir=tmp_path / "res"
    )
    assert report.record_path == tmp_path / "res" / "runs" / "fake-toy-seed3.json"
    record = read_record(report.record_path)
    assert set(record) == RECORD_KEYS
    assert record["schema_version"] == SCHEMA_VERSION
    assert (record["paper"], record["tier"], record["seed"], record["status"]) == ("fake", "toy", 3, "ran")
    assert record["config_hash"] == config_hash(record["config"]) and len(record["config_hash"]) == 16
    assert record["versions"]["saebench"] == saebench.__version__
    assert record["versions"]["torch"] == torch.__version__
    assert len(record["versions"]["git_sha"].removesuffix("-dirty")) in (40, len("unknown"))
    assert record["device"] == "cpu" and record["wall_time_s"] >= 0
    assert record["runs"][0] == {
        "fields": {"k": 8, "sae": "topk"},
        "metrics": {"cosine_similarity_mean": 0.95, "dead_fraction": 0.02, "fvu_dataset": 0.1, "l0": 8.0},
    }
    assert record["checks"] == {"recovers": {"detail": "MCC 0.97 >= 0.9", "passed": True}}
    assert [c["claim"] for c in record["claims"]] == ["fvu-topk", "cos-relu", "topk-beats-relu", "recovery"]
    assert record["summary"] == {"pass": 4, "fail": 0, "error": 0, "skipped": 0}
    # deterministic bytes: sorted keys at every level, so re-serialising the parsed record is the identity
    text = report.record_path.read_text()
    assert dump_json(json.loads(text)) == text
    assert list(json.loads(text)) == sorted(RECORD_KEYS)


def test_the_pipeline_gets_the_tier_seed_and_a_workdir(fake_root, tmp_path):
    run_reproduction(load_reproduction(fake_root / "fake"), "toy", seed=5, workdir=tmp_path / "work")
    assert (tmp_path / "calls.log").read_text() == "toy 5 True\n"
    assert (tmp_path / "work").is_dir()


def test_config_hash_is_order_free_and_content_sensitive():
    assert config_hash({"a": 1, "b": [1, 2]}) == config_hash({"b": [1, 2], "a": 1})
    assert config_hash({"a": 1, "b": [1, 2]}) != config_hash({"a": 1, "b": [2, 1]})
    assert config_hash({"a": 1}) != config_hash({"a": 1.5})


def test_non_finite_metrics_stay_strict_json():
    text = dump_json({"fvu": math.nan, "l0": math.inf, "ok": 0.5})
    assert json.loads(text) == {"fvu": "nan", "l0": "inf", "ok": 0.5}


def test_skipped_tier_record_names_what_is_missing(fake_root, tmp_path):
    report = run_reproduction(load_reproduction(fake_root / "fake"), "full", results_dir=tmp_path / "res")
    record = report.record
    assert report.skipped and not report.failed
    assert record["status"] == "skipped" and record["runs"] == [] and record["summary"]["skipped"] == 1
    assert record["missing"] == [
        "fake ViT weights: set SAEBENCH_FAKE_WEIGHTS to its path (SAEBENCH_FAKE_WEIGHTS is not set)"
    ]
    assert record["claims"][0]["detail"] == "needs " + record["missing"][0]
    assert record["claims"][0]["reason"] == "seed spread reported in the paper"  # the claim's own cells stay


def test_a_skip_never_replaces_the_record_of_a_real_run(fake_root, tmp_path, monkeypatch):
    repro = load_reproduction(fake_root / "fake")
    weights = tmp_path / "weights.pt"
    weights.write_bytes(b"")
    monkeypatch.setenv("SAEBENCH_FAKE_WEIGHTS", str(weights))
    ran = run_reproduction(repro, "full", results_dir=tmp_path / "res")
    assert ran.record["status"] == "ran"
    monkeypatch.delenv("SAEBENCH_FAKE_WEIGHTS")
    skipped = run_reproduction(repro, "full", results_dir=tmp_path / "res")
    assert skipped.record_path is None and "kept" in skipped.note
    assert read_record(ran.record_path)["status"] == "ran"


def test_pipeline_raising_missing_requirement_skips(kit, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = kit.write(
        tmp_path, "demo", kit.claims[:1], {"toy": {"raise_missing": "Fashion-MNIST: install X"}}
    )
    report = run_reproduction(load_reproduction(folder), "toy")
    assert report.record["missing"] == ["Fashion-MNIST: install X"]
    assert report.outcomes[0].status == "skipped" and report.record_path is None


def test_pipeline_breaking_its_contract_is_named(kit, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = kit.write(
        tmp_path, "demo", kit.claims[:1], {"toy": {}}, pipeline="def run(*a):\n    return {}\n"
    )
    with pytest.raises(ReproductionError, match="pipeline.run returned dict, not a PipelineResult"):
        run_reproduction(load_reproduction(folder), "toy")
    (folder / "pipeline.py").write_text("x = 1\n")
    with pytest.raises(
        ReproductionError, match=r"pipeline.py must define run\(tier, config, seed, workdir\)"
    ):
        load_reproduction(folder).pipeline()


def test_a_pipeline_may_import_its_siblings(kit, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    pipeline = "from .helpers import RESULT\n\n\ndef run(tier, config, seed, workdir):\n    return RESULT\n"
    folder = kit.write(tmp_path, "sibling", [], {"toy": {}}, pipeline=pipeline)
    (folder / "helpers.py").write_text(
        "from saebench.repro.pipeline import PipelineResult\n\nRESULT = PipelineResult(runs=[])\n"
    )
    assert run_reproduction(load_reproduction(folder), "toy").record["status"] == "ran"


def test_read_records_sorts_and_validates(tmp_path):
    base = {
        "schema_version": SCHEMA_VERSION,
        "status": "ran",
        "missing": [],
        "config": {},
        "config_hash": "0",
        "versions": {},
        "device": "cpu",
        "wall_time_s": 0.0,
        "runs": [],
        "checks": {},
        "claims": [],
        "summary": {},
    }
    for paper, tier, seed in [("b", "toy", 0), ("a", "full", 0), ("a", "toy", 1), ("a", "toy", 0)]:
        write_record(dict(base, paper=paper, tier=tier, seed=seed), tmp_path)
    order = [(r["paper"], r["tier"], r["seed"]) for r in read_records(tmp_path)]
    assert order == [("a", "toy", 0), ("a", "toy", 1), ("a", "full", 0), ("b", "toy", 0)]
    assert record_path(tmp_path, "a", "toy", 0).name == "a-toy.json"

    bad = tmp_path / "runs" / "a-toy.json"
    bad.write_text(json.dumps(dict(base, paper="a", tier="toy", seed=0, schema_version=0)))
    with pytest.raises(
        RecordError, match=r"a-toy.json: schema_version 0 is not 1; re-run `saebench reproduce`"
    ):
        read_records(tmp_path)
    bad.write_text(json.dumps(dict(base, paper="a", tier="toy", seed=0, extra=1)))
    with pytest.raises(RecordError, match=r"unknown key\(s\) \['extra'\]"):
        read_records(tmp_path)
    bad.write_text("{")
    with pytest.raises(RecordError, match="a-toy.json: not valid JSON"):
        read_records(tmp_path)
