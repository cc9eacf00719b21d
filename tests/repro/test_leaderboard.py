"""The leaderboard: built from records alone, byte-stable (markdown and PNG), with the Pareto front right."""

from __future__ import annotations

import json

import pytest

from saebench.repro.leaderboard import build_leaderboard
from saebench.repro.pipeline import load_reproduction
from saebench.repro.runner import run_reproduction
from saebench.viz.pareto import pareto_front, plot_pareto


@pytest.fixture
def results(fake_root, tmp_path):
    """Records of the fake reproduction: toy (ran) and full (skipped: weights missing)."""
    repro = load_reproduction(fake_root / "fake")
    for tier in ("toy", "full"):
        run_reproduction(repro, tier, results_dir=tmp_path / "results")
    return tmp_path / "results"


def _snapshot(results):
    return {p.relative_to(results): p.read_bytes() for p in sorted(results.rglob("*")) if p.is_file()}


def test_rebuilding_from_unchanged_records_changes_no_byte(results):
    build_leaderboard(results)
    first = _snapshot(results)
    assert {str(p) for p in first} >= {"leaderboard.md", "figures/pareto_fvu_l0_toy.png"}
    for path in first:
        if path.suffix in (".md", ".png"):
            (results / path).unlink()
    build_leaderboard(results)
    assert _snapshot(results) == first


def test_leaderboard_depends_on_record_contents_only(results):
    text = build_leaderboard(results).read_text()
    png = (results / "figures" / "pareto_fvu_l0_toy.png").read_bytes()
    record_file = results / "runs" / "fake-toy.json"
    record = json.loads(record_file.read_text())
    record["wall_time_s"] = 12345.678  # provenance that the leaderboard does not show
    record_file.write_text(json.dumps(record))
    assert build_leaderboard(results).read_text() == text
    assert "12345" not in text
    record["runs"][0]["metrics"]["fvu_dataset"] = 0.05  # content it does show
    record_file.write_text(json.dumps(record))
    assert build_leaderboard(results).read_text() != text
    assert (results / "figures" / "pareto_fvu_l0_toy.png").read_bytes() != png


def test_leaderboard_contents(results):
    text = build_leaderboard(results).read_text()
    toy, full = text.index("### fake · toy"), text.index("### fake · full")
    assert toy < full < text.index("## Every SAE trained")
    assert "| fvu-topk        | 0.12 " in text and "| pass " in text
    assert "not run: needs fake ViT weights: set SAEBENCH_FAKE_WEIGHTS to its path" in text[full:]
    # the SAE table: dead % is dead_fraction x 100 (0.10 -> 10, 0.02 -> 2); MCC and probe absent -> "-"
    relu = next(line for line in text.splitlines() if line.startswith("| fake    | toy    | relu"))
    assert [c.strip() for c in relu.strip("|").split("|")] == [
        "fake",
        "toy",
        "relu",
        "-",
        "k=8",
        "0.2",
        "0.9",
        "9.5",
        "10",
        "-",
        "-",
    ]
    assert "![FVU vs L0, toy tier](figures/pareto_fvu_l0_toy.png)" in text


def test_png_carries_no_software_metadata(results):
    build_leaderboard(results)
    png = (results / "figures" / "pareto_fvu_l0_toy.png").read_bytes()
    assert png.startswith(b"\x89PNG") and b"Software" not in png and b"matplotlib" not in png.lower()


def test_empty_results_folder(tmp_path):
    text = build_leaderboard(tmp_path).read_text()
    assert "No run records yet: run `saebench reproduce all --tier toy`." in text


def test_pareto_front_by_hand():
    # (L0, FVU): (2, .5) and (4, .2) and (8, .1) trade off; (5, .3) is beaten by (4, .2); (8, .4) by (8, .1)
    points = [(8, 0.4), (2, 0.5), (5, 0.3), (4, 0.2), (8, 0.1)]
    assert pareto_front(points) == [1, 3, 4]
    assert pareto_front([(1, 1), (1, 1)]) == [0, 1]  # equal points do not dominate each other
    assert pareto_front([]) == []


def test_plot_pareto_refuses_no_points(tmp_path):
    with pytest.raises(ValueError, match="at least one series with at least one point"):
        plot_pareto({"a": []}, tmp_path / "x.png", xlabel="L0", ylabel="FVU")
