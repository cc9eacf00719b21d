"""The pytest plugin, run in a child pytest on a fake reproduction: one case per claim, one pipeline run per
session, a readable diff for a failing case, skips naming what to supply, collection errors for bad claims."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

THIN_TEST_FILE = (
    "from saebench.repro.pytest_plugin import claim_tests\n\ntest_claim = claim_tests(__file__)\n"
)


def _pytest(cwd, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "SAEBENCH_FAKE_WEIGHTS"}
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "saebench.repro.pytest_plugin",
        "-p",
        "no:cacheprovider",
        "--import-mode=importlib",
        "-rs",
        "-q",
        *args,
    ]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.slow  # a child pytest that imports torch: ~5 s alone, over 10 s on a busy 2-core machine
def test_one_case_per_claim_one_pipeline_run_and_a_diff(kit, tmp_path):
    claims = kit.claims
    claims[0] = dict(claims[0], value=0.3)  # regenerated fvu 0.1: off by 0.2 > 0.05
    folder = kit.write(
        tmp_path / "reproductions",
        "fake",
        claims,
        {"toy": dict(kit.toy, log=str(tmp_path / "log")), "full": kit.full},
    )
    (folder / "test_fake.py").write_text(THIN_TEST_FILE)
    done = _pytest(tmp_path, "reproductions/fake", "--repro-results", "res")
    out = done.stdout
    assert done.returncode == 1, out + done.stderr
    assert "1 failed, 3 passed" in out
    assert (tmp_path / "log").read_text() == "toy 0 True\n"  # four cases, one pipeline run
    assert "test_claim[fvu-topk]" in out
    for line in (
        "claim 'fvu-topk' FAILED (reproductions/fake/claims.yaml)",
        "reported:    0.3",
        "regenerated: 0.1",
        "tolerance:   ±0.05",
        "because:     rounding in the table",
        "source:      Table 1",
    ):
        assert line in out, line
    assert "saebench claims: fake · toy · seed 0" in out  # the terminal summary table
    assert (tmp_path / "res" / "runs" / "fake-toy.json").is_file()


@pytest.mark.slow  # two child pytest runs
def test_full_tier_skips_with_what_to_supply_and_bad_claims_fail_collection(kit, tmp_path):
    folder = kit.write(tmp_path / "reproductions", "fake", kit.claims, {"toy": kit.toy, "full": kit.full})
    (folder / "test_fake.py").write_text(THIN_TEST_FILE)
    done = _pytest(tmp_path, "reproductions/fake", "--tier", "full")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 skipped" in done.stdout
    assert "fake full: needs fake ViT weights: set SAEBENCH_FAKE_WEIGHTS to its path" in done.stdout

    (folder / "claims.yaml").write_text(
        (folder / "claims.yaml").read_text().replace("tolerance_reason", "why")
    )
    done = _pytest(tmp_path, "reproductions/fake")
    assert done.returncode != 0
    assert "reproductions/fake/claims.yaml: claim 'fvu-topk': unknown key(s) ['why']" in done.stdout
    assert (
        "Traceback" not in done.stdout and "_pytest" not in done.stdout
    )  # the message, not pytest internals
