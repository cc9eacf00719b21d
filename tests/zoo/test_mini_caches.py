"""The one-call mini-tier cache on a 10-image plan: real EfficientNet-Lite0 plus tiny zoo models."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from saebench.acts.backbones import load_backbone
from saebench.acts.cache import cache_activations
from saebench.acts.sources import FashionMNISTSource, subset
from saebench.acts.store import AlignedStores, StoreMismatchError
from saebench.zoo import CNNConfig
from saebench.zoo.mini_caches import MiniStore, MiniTierPlan, cache_mini_tier, channels_last, open_mini_tier
from saebench.zoo.registry import backbone_of, ensure_trained

STORES = (
    MiniStore("efficientnet-lite0", "features", "patches"),
    MiniStore("efficientnet-lite0", "pooled", "all"),
    MiniStore("zoo-cnn", "features", "patches"),
    MiniStore("zoo-vit", "final_norm", "patches"),
    MiniStore("zoo-vit", "block.-1", "all"),
)
ALIGNED = ("efficientnet-lite0/features/patches", "zoo-cnn/features/patches", "zoo-vit/final_norm/patches")


@pytest.fixture(scope="module")
def out_root(tmp_path_factory, tiny_entries, fashion_mnist):
    """The 10-image plan (one image per class) cached once for the module, zoo in a private cache."""
    root = tmp_path_factory.mktemp("mini")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SAEBENCH_CACHE", str(root / "cache"))
        plan = MiniTierPlan("test", per_class=1, zoo=_zoo(tiny_entries), stores=STORES, aligned=ALIGNED)
        cache_mini_tier(root / "acts", plan, batch_size=4, progress=False)
        yield root


def _zoo(tiny_entries):
    return {role: tiny_entries[role] for role in ("zoo-cnn", "zoo-vit")}


def test_every_store_is_cached_with_its_rows(out_root):
    tier = open_mini_tier(out_root / "acts", "test")
    assert tier.keys() == sorted(store.key for store in STORES)
    rows = {key: (info["n_rows"], info["d"]) for key, info in tier.manifest["stores"].items()}
    assert rows == {
        "efficientnet-lite0/features/patches": (10 * 49, 1280),
        "efficientnet-lite0/pooled/all": (10, 1280),
        "zoo-cnn/features/patches": (10 * 49, 8),
        "zoo-vit/final_norm/patches": (10 * 49, 16),
        "zoo-vit/block.-1/all": (10 * 50, 16),
    }
    assert tier.manifest["stores"]["zoo-vit/block.-1/all"]["hook"] == "block.1"  # resolved: depth 2
    # one image per class, in file order: the first image of each label
    source = FashionMNISTSource("train")
    firsts = sorted(int((source.labels == label).nonzero()[0][0]) for label in range(10))
    assert tier.store("zoo-cnn/features/patches").image_order().tolist() == firsts


def test_pooled_store_is_the_mean_of_the_feature_store(out_root):
    """EfficientNet's pooled embedding is the average of its 7x7 map: the two stores agree (one forward)."""
    tier = open_mini_tier(out_root / "acts", "test")
    features = tier.store("efficientnet-lite0/features/patches").rows(0, 490).reshape(10, 49, 1280)
    pooled = tier.store("efficientnet-lite0/pooled/all").rows(0, 10)
    # tolerance: both are stored in float16, whose spacing near the ReLU6 ceiling of 6 is 2**-8 = 0.004
    torch.testing.assert_close(features.mean(dim=1), pooled, rtol=0, atol=4e-3)


def test_the_three_7x7_models_open_aligned(out_root):
    aligned = open_mini_tier(out_root / "acts", "test").aligned()
    assert list(aligned) == ["efficientnet-lite0", "zoo-cnn", "zoo-vit"]
    assert aligned.n_rows == 490
    batch = aligned.read_rows(0, 49)
    assert {name: rows.shape for name, rows in batch.items()} == {
        "efficientnet-lite0": (49, 1280),
        "zoo-cnn": (49, 8),
        "zoo-vit": (49, 16),
    }


def test_rerun_resumes_without_recomputing(out_root, tiny_entries, monkeypatch):
    monkeypatch.setenv("SAEBENCH_CACHE", str(out_root / "cache"))
    before = {p: p.stat().st_mtime_ns for p in (out_root / "acts").rglob("*.bin")}
    plan = MiniTierPlan("test", per_class=1, zoo=_zoo(tiny_entries), stores=STORES, aligned=ALIGNED)
    tier = cache_mini_tier(out_root / "acts", plan, batch_size=4, progress=False)
    assert {p: p.stat().st_mtime_ns for p in (out_root / "acts").rglob("*.bin")} == before
    assert tier.manifest["stores"] == open_mini_tier(out_root / "acts", "test").manifest["stores"]


def test_aligned_group_is_refused_when_grids_or_image_orders_differ(out_root, tiny_entries, monkeypatch):
    monkeypatch.setenv("SAEBENCH_CACHE", str(out_root / "cache"))
    tier = open_mini_tier(out_root / "acts", "test")
    efficientnet = tier.store("efficientnet-lite0/features/patches")
    cnn = backbone_of(ensure_trained(tiny_entries["zoo-cnn"]))
    source = subset(FashionMNISTSource("train"), per_class=1)

    # a 14x14 CNN map (two stages instead of three) on the same images
    two_stages = CNNConfig(channels=(4, 8), convs_per_stage=1)
    coarse = backbone_of(
        ensure_trained(replace(tiny_entries["zoo-cnn"], name="tiny-cnn-14", model=two_stages))
    )
    fine = cache_activations(coarse, source, "features", out_root=out_root / "other", progress=False)
    with pytest.raises(StoreMismatchError, match=r"differ in tokens per image: 49 .*vs 196"):
        AlignedStores({"efficientnet-lite0": efficientnet, "cnn-14x14": fine})

    # the same 7x7 CNN on ten other images (the first ten of the split, not one per class)
    shuffled = cache_activations(
        cnn,
        subset(FashionMNISTSource("train"), first_n=10),
        "features",
        out_root=out_root / "other",
        progress=False,
    )
    with pytest.raises(StoreMismatchError, match="differ in image order"):
        AlignedStores({"efficientnet-lite0": efficientnet, "zoo-cnn": shuffled})

    # CLS + 7x7 against 7x7: same grid, different tokens per image
    with pytest.raises(StoreMismatchError, match="differ in tokens per image: 49 .*vs 50"):
        AlignedStores({"efficientnet-lite0": efficientnet, "zoo-vit": tier.store("zoo-vit/block.-1/all")})


def test_missing_fashion_mnist_says_how_to_get_it(tmp_path, tiny_entries):
    plan = MiniTierPlan("test", per_class=1, zoo=_zoo(tiny_entries), stores=STORES, aligned=ALIGNED)
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        cache_mini_tier(tmp_path / "acts", plan, data_root=tmp_path / "empty", progress=False)


def test_missing_manifest_says_which_command_writes_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"`saebench cache-mini --smoke --out"):
        open_mini_tier(tmp_path, "smoke")


def test_plan_refuses_aligned_keys_it_does_not_cache():
    with pytest.raises(ValueError, match=r"aligned keys \['zoo-mlp/pooled/all'\] not among its stores"):
        MiniTierPlan("bad", per_class=1, stores=STORES, aligned=("zoo-mlp/pooled/all",))


def test_channels_last_keeps_the_fingerprint_and_the_outputs():
    backbone = load_backbone("zoo-cnn", seed=0)
    images = torch.randn(2, 3, 28, 28, generator=torch.Generator().manual_seed(0))
    before, fingerprint = backbone.extract(images, ["features"])["features"], backbone.fingerprint()
    converted = channels_last(load_backbone("zoo-cnn", seed=0))
    assert converted.model.stages[0][0].weight.is_contiguous(memory_format=torch.channels_last)
    assert converted.fingerprint() == fingerprint  # the weights' digest is taken over their values
    # tolerance: another convolution algorithm sums in another order (float32 rounding only)
    after = converted.extract(images, ["features"])["features"]
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)
