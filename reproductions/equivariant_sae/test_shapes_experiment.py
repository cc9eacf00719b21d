"""Smoke test of the mini tier's Shapes experiment at a tiny size: every stage runs and writes its outputs."""

from __future__ import annotations

import math

import pytest
import torch

from saebench.repro.pipeline import load_reproduction
from saebench.repro.runner import torch_threads

from .orbit_saes import _epoch_batches, sae_train_config

TINY = {
    "experiment": "shapes",
    "shapes": {"image_size": 12, "n_samples": 48, "radii": [2, 3]},
    "autoencoders": ["mlp", "cnn", "vit"],
    "ae": {"latent_dim": 16, "epochs": 1, "lr": 0.001},
    "group_action": {"epochs": 1, "lr": 0.001, "all_powers": True},
    "batch_size": 8,
    "torch_threads": 1,
    "train": {"total_steps": 4, "lr": 0.003},
    "probes": {"trunc_lengths": [2, 4], "kinds": ["logistic", "xgboost"], "factors": ["colour", "quadrant"]},
    "saes": [
        {"name": "vanilla", "architecture": "topk_mlp", "n_latents": 8, "k": 2, "encoder_hidden": 8},
        {"name": "vanilla-wide", "architecture": "topk_mlp", "n_latents": 16, "k": 2, "encoder_hidden": 8},
        {
            "name": "equivariant",
            "architecture": "equivariant",
            "loss_type": "canonical",
            "n_latents": 8,
            "k": 2,
            "encoder_hidden": 8,
        },
        {
            "name": "archetypal",
            "architecture": "archetypal",
            "n_latents": 8,
            "k": 2,
            "encoder_hidden": 8,
            "n_clusters": 8,
        },
    ],
}


@pytest.mark.slow  # 6-50 s on a busy 2-core machine, mostly first imports (sklearn, torch optimizers)
def test_shapes_experiment_runs_end_to_end(tmp_path):
    pipeline = load_reproduction(__file__.rsplit("/", 1)[0]).pipeline()
    threads = torch.get_num_threads()
    figure = tmp_path / "figures" / "probe_f1.png"
    result = pipeline.run("mini", {**TINY, "figure": str(figure)}, 0, tmp_path)
    assert torch.get_num_threads() == threads  # restored
    names = [(r.fields["backbone"], r.fields["name"]) for r in result.runs]
    assert names == [
        (arch, name)
        for arch in ("mlp", "cnn", "vit")
        for name in ("group-action", "vanilla", "vanilla-wide", "equivariant", "archetypal")
    ]
    for run in result.runs:
        assert all(math.isfinite(v) for v in run.metrics.values())
        if run.fields["name"] != "group-action":
            assert {"fvu", "l0", "f1_logistic_n2", "f1_xgboost_n4", "f1_oriented_xgboost_n2"} <= set(
                run.metrics
            )
    table = (tmp_path / "probe_results" / "results_4.csv").read_text().splitlines()
    assert table[0] == "backbone,method,n_latents,k,task,kind,trunc_length,f1"
    # 3 backbones x 4 SAEs x 2 kinds x (4 colour + 4 quadrant tasks) rows, all with trunc_length 4
    assert len(table) - 1 == 3 * 4 * 2 * 8 and all(line.split(",")[6] == "4" for line in table[1:])
    assert figure.stat().st_size > 0


@pytest.mark.slow  # two spawned workers import torch, scikit-learn and XGBoost: 10-30 s
def test_workers_give_the_same_numbers(tmp_path):
    pipeline = load_reproduction(__file__.rsplit("/", 1)[0]).pipeline()
    config = {**TINY, "autoencoders": ["mlp", "vit"], "saes": TINY["saes"][2:]}
    with torch_threads(config):
        serial = pipeline.run("mini", config, 0, tmp_path / "serial")
        parallel = pipeline.run("mini", {**config, "workers": 2}, 0, tmp_path / "parallel")
    assert [r.fields for r in parallel.runs] == [r.fields for r in serial.runs]
    assert [r.metrics for r in parallel.runs] == [r.metrics for r in serial.runs]
    table = "probe_results/results_2.csv"
    assert (tmp_path / "parallel" / table).read_text() == (tmp_path / "serial" / table).read_text()


def test_unknown_autoencoder():
    pipeline = load_reproduction(__file__.rsplit("/", 1)[0]).pipeline()
    with pytest.raises(ValueError, match="unknown autoencoder architecture"):
        pipeline.run("mini", {**TINY, "autoencoders": ["resnet"]}, 0, "/tmp")


def test_epochs_become_steps():
    spec = {"name": "a", "train": {"epochs": 3}}
    config = sae_train_config({"lr": 0.001, "total_steps": 9}, {"name": "b"}, 5, seed=0)
    assert config.total_steps == 9
    assert sae_train_config({"lr": 0.001, "epochs": 2}, spec, 5, seed=0).total_steps == 15
    with pytest.raises(ValueError, match="both epochs .* and total_steps"):
        sae_train_config({"lr": 0.001, "total_steps": 9}, spec, 5, seed=0)


def test_each_epoch_visits_every_row_once():
    rows = torch.arange(10)
    batches = _epoch_batches(rows, 4, seed=0)
    for _ in range(2):
        epoch = [next(batches) for _ in range(3)]  # 4 + 4 + 2 rows
        assert [len(b) for b in epoch] == [4, 4, 2]
        assert sorted(torch.cat(epoch).tolist()) == list(range(10))
