"""Fixtures for the harness tests: tiny fake reproductions written into a temporary ``reproductions/`` folder.

The fake pipeline trains nothing: its tier config lists the runs (fields + metrics) and check results it
returns, so each test states exactly what the "regenerated" numbers are. It appends one line per call to
the file named by the config's ``log`` key, so tests can count how often it ran.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml

FAKE_PIPELINE = textwrap.dedent(
    """
    from pathlib import Path

    from saebench.repro.pipeline import CheckResult, PipelineResult, Run
    from saebench.repro.tiers import MissingRequirement


    def run(tier, config, seed, workdir):
        if "log" in config:
            with open(config["log"], "a") as log:
                log.write(f"{tier} {seed} {Path(workdir).is_dir()}\\n")
        if "raise_missing" in config:
            raise MissingRequirement(config["raise_missing"])
        runs = [Run(fields=r["fields"], metrics=r["metrics"]) for r in config.get("runs", [])]
        checks = {name: CheckResult(**c) for name, c in config.get("checks", {}).items()}
        return PipelineResult(runs=runs, checks=checks, device="cpu")
    """
)

# Two SAEs; values chosen so hand-checked claims below pass or fail by a clear margin.
FAKE_RUNS = [
    {
        "fields": {"sae": "topk", "k": 8},
        "metrics": {"fvu_dataset": 0.10, "l0": 8.0, "cosine_similarity_mean": 0.95, "dead_fraction": 0.02},
    },
    {
        "fields": {"sae": "relu", "k": 8},
        "metrics": {"fvu_dataset": 0.20, "l0": 9.5, "cosine_similarity_mean": 0.90, "dead_fraction": 0.10},
    },
]

PASSING_CLAIMS = [
    {
        "id": "fvu-topk",
        "tiers": ["toy"],
        "source": "Table 1",
        "metric": "fvu_dataset",
        "selector": {"sae": "topk"},
        "value": 0.12,
        "tolerance": {"abs": 0.05},
        "tolerance_reason": "rounding in the table",
    },
    {
        "id": "cos-relu",
        "tiers": ["toy"],
        "source": {"regenerated": {"how": "fake", "seeds": [0, 1, 2]}},
        "metric": "cosine_similarity_mean",
        "selector": {"sae": "relu"},
        "bound": {"op": ">=", "value": 0.85, "reason": "floor"},
    },
    {
        "id": "topk-beats-relu",
        "tiers": ["toy"],
        "source": "Fig. 2",
        "metric": "fvu_dataset",
        "selector": {"k": 8},
        "ordering": {"better": {"sae": "topk"}, "worse": {"sae": "relu"}, "better_is": "lower"},
    },
    {"id": "recovery", "tiers": ["toy"], "source": "Section 3", "check": "recovers"},
    {
        "id": "fvu-full",
        "tiers": ["full"],
        "source": "Table 9",
        "metric": "fvu_dataset",
        "selector": {"sae": "topk"},
        "value": 0.1,
        "tolerance": {"rel": 0.1},
        "tolerance_reason": "seed spread reported in the paper",
    },
]

TOY_CONFIG = {"runs": FAKE_RUNS, "checks": {"recovers": {"passed": True, "detail": "MCC 0.97 >= 0.9"}}}
FULL_CONFIG = {
    "requires": [
        {"kind": "file", "name": "weights", "what": "fake ViT weights", "env": "SAEBENCH_FAKE_WEIGHTS"}
    ],
    "runs": FAKE_RUNS,
}


def write_reproduction(
    root: Path, name: str, claims: list[dict], configs: dict[str, dict], pipeline: str = FAKE_PIPELINE
) -> Path:
    """Write ``root/<name>/`` with claims.yaml, configs/<tier>.yaml and pipeline.py; return the folder."""
    folder = root / name
    (folder / "configs").mkdir(parents=True, exist_ok=True)
    (folder / "claims.yaml").write_text(yaml.safe_dump({"paper": name, "claims": claims}, sort_keys=False))
    for tier, config in configs.items():
        (folder / "configs" / f"{tier}.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (folder / "pipeline.py").write_text(pipeline)
    return folder


@pytest.fixture
def fake_root(tmp_path, monkeypatch) -> Path:
    """A ``reproductions/`` folder with one passing reproduction ``fake`` (toy passes; full needs a file).

    The working directory is ``tmp_path`` so relative ``results/`` and scratch folders land there."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SAEBENCH_FAKE_WEIGHTS", raising=False)
    root = tmp_path / "reproductions"
    toy = dict(TOY_CONFIG, log=str(tmp_path / "calls.log"))
    write_reproduction(root, "fake", PASSING_CLAIMS, {"toy": toy, "full": FULL_CONFIG})
    return root


@pytest.fixture
def kit():
    """The fake-reproduction helpers and constants above, for tests (test files cannot import conftest)."""
    import copy
    from types import SimpleNamespace

    return SimpleNamespace(
        write=write_reproduction,
        pipeline=FAKE_PIPELINE,
        runs=copy.deepcopy(FAKE_RUNS),
        claims=copy.deepcopy(PASSING_CLAIMS),
        toy=copy.deepcopy(TOY_CONFIG),
        full=copy.deepcopy(FULL_CONFIG),
    )
