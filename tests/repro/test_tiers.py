"""Tier requirements: what is missing is named with how to supply it; malformed entries are refused."""

from __future__ import annotations

import pytest
import torch

from saebench.repro.tiers import (
    RequirementError,
    check_tier,
    missing_requirements,
    parse_requirements,
    requirement_paths,
)

WEIGHTS = {"kind": "file", "name": "weights", "what": "CLIP ViT-L/14 weights", "env": "SAEBENCH_TEST_WEIGHTS"}
DATA = {
    "kind": "dir",
    "name": "imagenet",
    "what": "ImageNet-1k (train/ val/ folders)",
    "env": "SAEBENCH_TEST_DATA",
}


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    monkeypatch.delenv("SAEBENCH_TEST_WEIGHTS", raising=False)
    monkeypatch.delenv("SAEBENCH_TEST_DATA", raising=False)


def test_unset_variable_names_what_and_how():
    assert missing_requirements({"requires": [WEIGHTS]}) == [
        "CLIP ViT-L/14 weights: set SAEBENCH_TEST_WEIGHTS to its path (SAEBENCH_TEST_WEIGHTS is not set)"
    ]


def test_path_that_does_not_exist_is_named(monkeypatch, tmp_path):
    monkeypatch.setenv("SAEBENCH_TEST_WEIGHTS", str(tmp_path / "w.pt"))
    [reason] = missing_requirements({"requires": [WEIGHTS]})
    assert f"SAEBENCH_TEST_WEIGHTS={tmp_path / 'w.pt'} is not an existing file" in reason
    default = dict(DATA, default=str(tmp_path / "imagenet"))
    [reason] = missing_requirements({"requires": [default]})
    assert f"default {tmp_path / 'imagenet'} is not an existing dir" in reason


def test_a_file_is_not_a_dir(monkeypatch, tmp_path):
    (tmp_path / "w.pt").write_bytes(b"")
    monkeypatch.setenv("SAEBENCH_TEST_DATA", str(tmp_path / "w.pt"))
    assert len(missing_requirements({"requires": [DATA]})) == 1


def test_satisfied_requirements_resolve_to_paths(monkeypatch, tmp_path):
    (tmp_path / "w.pt").write_bytes(b"")
    monkeypatch.setenv("SAEBENCH_TEST_WEIGHTS", str(tmp_path / "w.pt"))
    config = {"requires": [WEIGHTS, dict(DATA, default=str(tmp_path))]}
    assert missing_requirements(config) == []
    assert requirement_paths(config) == {"weights": tmp_path / "w.pt", "imagenet": tmp_path}


def test_requirement_paths_refuses_a_missing_path():
    with pytest.raises(FileNotFoundError, match="needs CLIP ViT-L/14 weights: set SAEBENCH_TEST_WEIGHTS"):
        requirement_paths({"requires": [WEIGHTS]})


def test_gpu_requirement(monkeypatch):
    config = {"requires": [{"kind": "gpu", "what": "a CUDA GPU with 24 GiB"}]}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert missing_requirements(config) == [
        "a CUDA GPU with 24 GiB (torch.cuda.is_available() is False on this machine)"
    ]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert missing_requirements(config) == []


def test_no_requires_means_nothing_missing():
    assert missing_requirements({"world": {"d": 8}}) == []


@pytest.mark.parametrize(
    ("requires", "problem"),
    [
        ({"kind": "file"}, "'requires' must be a list"),
        ([{"kind": "url", "what": "x"}], "kind 'url' is not one of file, dir, gpu"),
        ([{"kind": "gpu"}], "'what' must say what is needed"),
        ([{"kind": "file", "what": "x", "name": "w"}], "a file requirement needs 'env'"),
        ([dict(WEIGHTS, path="/x")], "unknown key(s) ['path']"),
        (["gpu"], "must be a mapping"),
    ],
)
def test_malformed_requirements_name_the_config(requires, problem):
    with pytest.raises(RequirementError) as info:
        parse_requirements({"requires": requires}, "configs/full.yaml")
    assert str(info.value).startswith("configs/full.yaml: ")
    assert problem in str(info.value)


def test_check_tier():
    assert check_tier("mini") == "mini"
    with pytest.raises(ValueError, match="unknown tier 'huge'; choose one of toy, mini, full"):
        check_tier("huge")
