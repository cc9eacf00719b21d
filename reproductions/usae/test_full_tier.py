"""The full tier's code path (caching three ViTs' patch tokens into aligned stores, training the USAE and the
independent SAEs, the metrics the full claims read, the figures) on tiny random stand-ins: three timm ViTs cut
down to 32 px images, one without a class token (as SigLIP) and one with a finer grid resized to the others'
(as DINOv2's 16 x 16 -> 14 x 14), and generated images. Seconds on a CPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from saebench.acts.backbones import load_backbone
from saebench.acts.sources import TensorImageSource
from saebench.repro.pipeline import Reproduction
from saebench.repro.yamlfile import load_yaml

from .full_tier import run_on_sources

# ~20 s on the shared 2-core machine, most of it importing timm and building the three ViTs
pytestmark = pytest.mark.slow

FOLDER = Path(__file__).parent
TINY = "timm:vit_tiny_patch16_224"
# (model name in full.yaml, constructor overrides): 32 px inputs, one block, small widths that differ
STAND_INS = {
    "SigLIP": {
        "img_size": 32,
        "depth": 1,
        "embed_dim": 48,
        "class_token": False,
        "global_pool": "avg",
        "fc_norm": False,
    },
    "DinoV2": {"img_size": 32, "patch_size": 8, "depth": 1, "embed_dim": 24},  # 4x4 grid, resized to 2x2
    "ViT": {"img_size": 32, "depth": 1, "embed_dim": 48},
}


def _images(n: int, seed: int) -> TensorImageSource:
    pixels = np.random.default_rng(seed).integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
    return TensorImageSource(pixels, name=f"random-{seed}")


def _tiny_config() -> dict:
    """full.yaml with every size cut down; the model names, hook, metric names and thresholds stay."""
    config = load_yaml(FOLDER / "configs" / "full.yaml")
    config["models"]["DinoV2"]["grid"] = [2, 2]
    config |= {
        "usae": {"n_latents": 16, "k": 8},  # k = m / 2: many concepts co-fire by chance
        "train": {**config["train"], "total_steps": 24, "warmup_steps": 2, "lr": 0.01, "final_lr": 1e-4},
        "images_per_batch": 4,
        "standardize_images": 8,
        "eval_images_per_batch": 4,
        "min_cofires": 1,
        "independent": {"train": {"total_steps": 12, "lr": 0.01}},
        "cache": {**config["cache"], "batch_size": 8, "workers": 0, "progress": False, "dir": None},
        "device": "cpu",
    }
    return config


@pytest.fixture(scope="module")
def tiny_full_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("usae-full")
    config = _tiny_config()
    backbones = {
        name: load_backbone(TINY, model_kwargs=STAND_INS[name], seed=index)
        for index, name in enumerate(config["models"])
    }
    result = run_on_sources(
        backbones, _images(24, 0), _images(8, 1), config, 0, workdir, figures=(workdir / "figures", "tiny")
    )
    return config, workdir, result


def test_every_full_claim_finds_its_metric(tiny_full_run):
    config, _, result = tiny_full_run
    claims = Reproduction(FOLDER).claims().for_tier("full")
    assert claims
    for claim in claims:
        metric = claim.metric.replace("min1000", f"min{config['min_cofires']}")
        runs = [run for run in result.runs if run.matches(claim.selector)]
        assert len(runs) == 1, f"{claim.id}: {len(runs)} runs match {dict(claim.selector)}"
        assert np.isfinite(runs[0].metrics[metric]), f"{claim.id}: {metric} = {runs[0].metrics[metric]}"


def test_runs_hold_bounded_metrics_and_checks(tiny_full_run):
    config, _, result = tiny_full_run
    assert {run.fields["name"] for run in result.runs} == {"SigLIP", "DinoV2", "ViT", "usae"}
    for run in result.runs:
        if run.fields["name"] != "usae":
            assert 0 <= run.metrics["dead_fraction"] <= run.metrics["dead_fraction_after_tau"] <= 1
            assert 0 <= run.metrics["consistency_fraction"] <= 1
    summary = next(run for run in result.runs if run.fields["name"] == "usae")
    # rows: 8 held-out images x the 2x2 grid every model was cached at (DinoV2's 4x4 resized)
    assert summary.metrics["eval_rows"] == 8 * 4
    assert 0 <= summary.metrics["firing_entropy_median"] <= 1
    assert set(result.checks) == {
        "r2-diagonal-dominates",
        "r2-off-diagonal-positive",
        "consistency-beats-baseline",
    }


def test_figures_are_written(tiny_full_run):
    _, workdir, _ = tiny_full_run
    for what in ("r2_matrix", "firing_entropy", "cofire_by_rank"):
        png = workdir / "figures" / f"usae_{what}_tiny.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
