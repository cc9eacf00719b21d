"""Unit tests of the MSAE embedding experiment's pieces (standardisation, batches, split, frontier test) and a
smoke run of the mini tier's per-backbone path on synthetic embeddings (the real stores are not in CI)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from saebench.acts.normalization import array_statistics
from saebench.repro.pipeline import Run
from saebench.repro.tiers import missing_requirements


def test_array_statistics_and_standardisation_by_hand(msae):
    # rows (0,0), (2,0), (0,2), (2,2): mean (1,1); every centred row has norm sqrt(2), squared norm 2
    rows = np.array([[0, 0], [2, 0], [0, 2], [2, 2]], dtype=np.float32)
    stats = array_statistics(rows, chunk_rows=3)  # chunks of 3 + 1 rows
    assert array_statistics(torch.from_numpy(rows)).mean_centered_norm == pytest.approx(math.sqrt(2))
    np.testing.assert_allclose(stats.mean, [1.0, 1.0])
    assert stats.mean_sq_centered_norm == pytest.approx(2.0)
    assert stats.mean_centered_norm == pytest.approx(math.sqrt(2))
    np.testing.assert_allclose(stats.std, [math.sqrt(4 / 3)] * 2)  # deviations +-1, 4 rows: 4 / (4 - 1)
    # authors' code: s = sqrt(n) / mean ||x - mu||^2 = sqrt(2) / 2, so scale = 1/s = 2 / sqrt(2) = sqrt(2)
    mean, scale = msae.embedding_sweep.standardisation(rows, "target_norm_code")
    np.testing.assert_allclose(mean.numpy(), [1.0, 1.0])
    np.testing.assert_allclose(scale.numpy(), [math.sqrt(2)] * 2, rtol=1e-6)
    # paper reading: s = sqrt(n) / mean ||x - mu|| = sqrt(2) / sqrt(2) = 1
    np.testing.assert_allclose(
        msae.embedding_sweep.standardisation(rows, "target_norm_paper")[1].numpy(), [1, 1]
    )


def test_shuffled_batches_cover_each_epoch_once(msae):
    rows = np.arange(10, dtype=np.float32)[:, None]
    batches = list(msae.embedding_sweep.shuffled_batches(rows, 3, n_steps=7, seed=0, transform=lambda x: -x))
    assert len(batches) == 7 and all(b.shape == (3, 1) for b in batches)
    values = [(-torch.cat(batches[i : i + 3])).flatten().tolist() for i in (0, 3)]
    for epoch in values:  # 3 batches of 3 per epoch of 10 rows: 9 distinct rows, the 10th dropped
        assert len(set(epoch)) == 9 and set(epoch) <= set(range(10))
    assert values[0] != values[1]  # a fresh permutation each epoch
    with pytest.raises(ValueError, match="batch_size must lie in"):
        next(msae.embedding_sweep.shuffled_batches(rows, 11, 1, 0))


def test_split_rows_is_a_partition(msae):
    train, held_out = msae.mini_tier.split_rows(50, 10, split_seed=0)
    assert len(held_out) == 10 and sorted(np.concatenate([train, held_out]).tolist()) == list(range(50))
    with pytest.raises(ValueError, match="eval_rows must lie in"):
        msae.mini_tier.split_rows(50, 50, 0)


def _msae_run(points: dict[int, tuple[float, float]]) -> Run:
    metrics = {}
    for k, (l0, fvu) in points.items():
        metrics[f"msae_l0_at_k{k}"], metrics[f"msae_fvu_at_k{k}"] = l0, fvu
    return Run(fields={"name": "msae-rw", "sae": "matryoshka"}, metrics=metrics)


def _baseline(name: str, l0: float, fvu: float) -> Run:
    return Run(fields={"name": name, "sae": "topk"}, metrics={"l0": l0, "msae_fvu": fvu})


def test_dominance_by_hand(msae):
    frontier = msae.frontier
    msae_run = _msae_run({16: (16.0, 0.30), 32: (32.0, 0.10), 64: (60.0, 0.05)})
    assert frontier.msae_points(msae_run) == [(16.0, 0.30), (32.0, 0.10), (60.0, 0.05)]
    # (40, 0.12): the MSAE point (32, 0.10) is sparser and better: margin 0.12 - 0.10 = +0.02
    inside = frontier.dominance_check(msae_run, [_baseline("a", 40.0, 0.12)])
    assert inside.passed and "margin +0.0200" in inside.detail
    # (40, 0.08): only (16, .30) and (32, .10) are as sparse; 0.08 - 0.10 = -0.02 (no interpolation to 60)
    outside = frontier.dominance_check(msae_run, [_baseline("a", 40.0, 0.12), _baseline("b", 40.0, 0.08)])
    assert not outside.passed and "margin -0.0200 FAIL" in outside.detail
    # sparser than every MSAE point: nothing to compare with, which fails
    sparse = frontier.dominance_check(msae_run, [_baseline("c", 8.0, 0.9)])
    assert not sparse.passed and "no MSAE point as sparse" in sparse.detail


def test_frontier_figure_is_written(msae, tmp_path):
    path = msae.frontier.plot_frontiers(
        {"x msae-rw": [(16, 0.3), (32, 0.1)], "x topk": [(20, 0.2)]}, tmp_path / "f.png", title="t"
    )
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_mini_tier_skips_naming_cache_mini(msae, monkeypatch, tmp_path):
    from saebench.repro.pipeline import load_reproduction

    config = load_reproduction(msae.mini_tier.__file__.rsplit("/", 1)[0]).config("mini")
    monkeypatch.setenv("SAEBENCH_MINI_MANIFEST", str(tmp_path / "absent.json"))
    (reason,) = missing_requirements(config)
    assert "saebench cache-mini" in reason


TINY_MINI = {
    "normalization": "target_norm_code",
    "eval_rows": 100,
    "split_seed": 0,
    "batch_size": 50,
    "train": {"total_steps": 12, "lr": 0.003, "optimizer": "adamw", "grad_clip": 1.0},
    "evaluation": {"chunk_rows": 64, "cknna_batch": 50, "cknna_max_batches": 1},
    "probe": {"lr": 0.01, "batch_size": 64, "epochs": 3, "patience": 2, "seed": 42},
    "saes": [
        {"name": "relu-l1-a", "architecture": "relu", "expansion": 4, "l1_coefficient": 0.001},
        {"name": "topk-k8", "architecture": "topk", "expansion": 4, "k": 8},
        {"name": "topk-k16", "architecture": "topk", "expansion": 4, "k": 16},
        {"name": "msae-rw", "architecture": "matryoshka", "expansion": 4, "weighting": "rw", "first_k": 16},
        {"name": "msae-uw", "architecture": "matryoshka", "expansion": 4, "weighting": "uw", "first_k": 16},
    ],
}


@pytest.mark.slow  # 2 s once torch.optim is imported; its first import (torch._dynamo) takes 5-25 s here
def test_mini_backbone_path_on_synthetic_embeddings(msae):
    torch.manual_seed(0)
    rows = torch.randn(400, 12) @ torch.randn(12, 12) + 2.0
    labels = torch.randint(0, 4, (400,))
    spec = {"store": "synthetic/embed/all"}
    runs = msae.mini_tier.run_embeddings(spec, rows, labels, TINY_MINI, seed=0, device="cpu")
    assert [r.fields["name"] for r in runs] == [s["name"] for s in TINY_MINI["saes"]]
    assert all(r.fields["backbone"] == "synthetic" and r.fields["n_latents"] == 48 for r in runs)
    for run in runs:
        assert all(math.isfinite(v) for v in run.metrics.values()), run.label()
        assert "named_concepts" not in run.metrics  # no vocabulary for this backbone
    checks = msae.mini_tier.backbone_checks("synthetic", runs)
    kinds = ("dominates", "dominates-relu", "dominates-topk", "graceful", "truncates-better")
    assert set(checks) == {f"synthetic-{m}-{c}" for m in ("msae-rw", "msae-uw") for c in kinds}
    series = msae.mini_tier.frontier_series("synthetic", runs)
    assert sorted(series) == ["synthetic msae-rw", "synthetic msae-uw", "synthetic relu", "synthetic topk"]
    assert len(series["synthetic topk"]) == 2 and len(series["synthetic msae-rw"]) == 3  # k = 16, 32, 48
