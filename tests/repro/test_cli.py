"""``saebench reproduce`` / ``saebench leaderboard``: exit codes, printed tables and diffs, written files."""

from __future__ import annotations

import argparse

import pytest

from saebench.repro.cli import register


def _main(argv: list[str]) -> int:
    """What ``saebench <argv>`` does once the lead wires saebench.repro.cli into saebench/cli.py."""
    parser = argparse.ArgumentParser(prog="saebench")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_reproduce_all_passes_and_writes_record_and_leaderboard(fake_root, tmp_path, capsys):
    assert _main(["reproduce", "all", "--reproductions", str(fake_root)]) == 0
    out = capsys.readouterr().out
    assert "== fake · toy · seed 0 ==" in out and "| topk-beats-relu |" in out
    assert (tmp_path / "results" / "runs" / "fake-toy.json").is_file()
    assert (tmp_path / "results" / "leaderboard.md").is_file()
    assert (tmp_path / ".saebench_cache" / "repro" / "fake-toy-seed0").is_dir()


def test_a_failing_claim_exits_non_zero_with_a_diff(kit, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    claims = kit.claims[:2]
    claims[0] = dict(claims[0], value=0.5)  # regenerated fvu is 0.1: |0.1 - 0.5| > 0.05
    kit.write(tmp_path / "reproductions", "bad", claims, {"toy": kit.toy})
    kit.write(tmp_path / "reproductions", "good", kit.claims[1:2], {"toy": kit.toy})
    assert _main(["reproduce", "all", "--results", "out"]) == 1
    captured = capsys.readouterr()
    assert "claim 'fvu-topk' FAILED (reproductions/bad/claims.yaml)" in captured.out
    assert "  reported:    0.5\n  regenerated: 0.1\n  tolerance:   ±0.05" in captured.out
    assert "FAILED: bad" in captured.err and "good" not in captured.err
    assert (tmp_path / "out" / "runs" / "good-toy.json").is_file()  # the other paper still ran


def test_a_claim_that_cannot_be_evaluated_also_fails(kit, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    claims = [dict(kit.claims[0], selector={"k": 8})]  # matches both runs
    kit.write(tmp_path / "reproductions", "ambiguous", claims, {"toy": kit.toy})
    assert _main(["reproduce", "ambiguous", "--no-leaderboard"]) == 1
    assert (
        "matches 2 runs; add a field that tells them apart (they differ in: sae)" in capsys.readouterr().out
    )
    assert not (tmp_path / "results" / "leaderboard.md").exists()


def test_skipped_tier_does_not_fail(fake_root, tmp_path, capsys):
    assert _main(["reproduce", "fake", "--tier", "full", "--reproductions", str(fake_root)]) == 0
    assert "skipped: needs fake ViT weights: set SAEBENCH_FAKE_WEIGHTS" in capsys.readouterr().out


def test_crashing_pipeline_fails_without_a_record(kit, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    kit.write(
        tmp_path / "reproductions",
        "crash",
        kit.claims[:1],
        {"toy": {}},
        pipeline="def run(*args):\n    raise RuntimeError('boom')\n",
    )
    assert _main(["reproduce", "crash"]) == 1
    err = capsys.readouterr().err
    assert "RuntimeError: boom" in err and "crash: the pipeline crashed; no record written" in err
    assert not (tmp_path / "results" / "runs" / "crash-toy.json").exists()


def test_unknown_paper_lists_the_available_ones(fake_root, capsys):
    assert _main(["reproduce", "nope", "--reproductions", str(fake_root)]) == 2
    err = capsys.readouterr().err
    assert "no reproduction named 'nope'" in err and "available: fake, or 'all'" in err


def test_unknown_tier_is_a_usage_error(fake_root):
    with pytest.raises(SystemExit) as info:
        _main(["reproduce", "fake", "--tier", "huge"])
    assert info.value.code == 2


def test_leaderboard_command(fake_root, tmp_path, capsys):
    _main(["reproduce", "fake", "--reproductions", str(fake_root), "--no-leaderboard"])
    assert not (tmp_path / "results" / "leaderboard.md").exists()
    assert _main(["leaderboard"]) == 0
    assert "### fake · toy" in (tmp_path / "results" / "leaderboard.md").read_text()
