"""Smoke test of the full tier's GalaxyMNIST experiment on small files in the galaxy_datasets layout and a
randomly initialised ConvNeXt-nano saved as the Zoobot weights file: every stage runs and writes its outputs.
The claims of the full tier need the real data and weights (configs/full.yaml ``requires``)."""

from __future__ import annotations

import math

import pytest
import torch

from saebench.data.galaxy import write_galaxy_mnist
from saebench.repro.pipeline import load_reproduction

pytest.importorskip("pyarrow")  # the catalogs are parquet files

TINY_SAES = [
    {"name": "vanilla", "architecture": "topk_mlp", "n_latents": 8, "k": 2, "encoder_hidden": 8},
    {
        "name": "equivariant-latent-inv",
        "architecture": "equivariant",
        "loss_type": "latent_inv",
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
        "n_clusters": 16,
        "train": {"b_dec_init": None},
    },
]


@pytest.mark.slow  # 5-30 s on a busy 2-core machine: timm import and a 60 MB weights file
def test_galaxy_experiment_runs_end_to_end(tmp_path, monkeypatch):
    import timm
    from safetensors.torch import save_file

    generator = torch.Generator().manual_seed(0)
    for split in ("train", "test"):
        images = torch.randint(0, 256, (8, 3, 16, 16), dtype=torch.uint8, generator=generator)
        write_galaxy_mnist(tmp_path / "galaxy", split, images, torch.arange(8) % 4)
    weights = tmp_path / "zoobot.safetensors"
    model = timm.create_model("convnext_nano", pretrained=False, num_classes=0)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    monkeypatch.setenv("SAEBENCH_GALAXY_MNIST", str(tmp_path / "galaxy"))
    monkeypatch.setenv("SAEBENCH_ZOOBOT_CONVNEXT_NANO", str(weights))

    reproduction = load_reproduction(__file__.rsplit("/", 1)[0])
    config = {
        **reproduction.config("full"),
        "image_size": 32,
        "device": "cpu",
        "group_action": {"epochs": 1, "lr": 0.001, "all_powers": True},
        "batch_size": 4,
        "train": {"total_steps": 3, "lr": 0.003},
        "probes": {"trunc_lengths": [2], "kinds": ["logistic"]},
        "figure": str(tmp_path / "figures" / "galaxy.png"),
        "saes": TINY_SAES,
    }
    result = reproduction.pipeline().run("full", config, 0, tmp_path)
    assert [r.fields["name"] for r in result.runs] == ["group-action"] + [s["name"] for s in TINY_SAES]
    assert all(r.fields["backbone"] == "zoobot" for r in result.runs)
    for run in result.runs:
        assert all(math.isfinite(v) for v in run.metrics.values())
    assert {"fvu", "l0", "f1_logistic_n2"} <= set(result.runs[1].metrics)
    table = (tmp_path / "probe_results" / "results_2.csv").read_text().splitlines()
    assert len(table) - 1 == 3 * 4  # 3 SAEs x 4 one-vs-rest class tasks
    assert (tmp_path / "figures" / "galaxy.png").stat().st_size > 0

    with pytest.raises(ValueError, match="input_dim"):
        reproduction.pipeline().run("full", {**config, "input_dim": 320}, 0, tmp_path)
