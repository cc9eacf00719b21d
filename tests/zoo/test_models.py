"""Zoo model shapes, hook points and token layouts, and the preprocessing shared by training and caching."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from saebench.acts.backbones import available_backbones, load_backbone
from saebench.acts.tokens import TokenLayout
from saebench.zoo import ZOO_PREPROCESSING, CNNConfig, MLPConfig, ViTConfig, build_model
from saebench.zoo.data import normalize_pixels


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    """(2, 3, 28, 28): two grey images copied to RGB, as the zoo preprocessing makes them."""
    grey = torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    return grey.expand(-1, 3, -1, -1).contiguous()


def test_zoo_backbones_are_registered():
    assert {"zoo-cnn", "zoo-vit", "zoo-mlp", "zoo-clip"} <= set(available_backbones())


def test_cnn_features_are_the_last_map_as_7x7_row_major_tokens(images):
    backbone = load_backbone("zoo-cnn", seed=1)
    hook = backbone.hooks["features"]
    assert (hook.kind, hook.layout, hook.width) == ("map", TokenLayout(grid=(7, 7)), 64)
    acts = backbone.extract(images, ["features", "pooled", "logits"])
    feature_map = backbone.model.stages(images.mean(dim=1, keepdim=True))  # (2, 64, 7, 7), as in forward
    assert acts["features"].shape == (2, 49, 64)
    # token r*7+c is map position (r, c): the row-major order of the TokenLayout contract
    torch.testing.assert_close(acts["features"][:, 3 * 7 + 5], feature_map[:, :, 3, 5], rtol=0, atol=0)
    # pooled = mean of the 49 tokens (global average pooling), the input of the head
    torch.testing.assert_close(acts["pooled"][:, 0], acts["features"].mean(dim=1), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(acts["logits"][:, 0], backbone.model.head(acts["pooled"][:, 0]))


def test_vit_has_cls_plus_7x7_residual_stream_hooks(images):
    backbone = load_backbone("zoo-vit", seed=1)
    depth = backbone.model.config.depth
    assert [f"block.{i}" for i in range(depth)] == [
        name for name in backbone.hooks if name.startswith("block.")
    ]
    layout = TokenLayout(n_cls=1, grid=(7, 7))
    assert backbone.resolve_hook("block.-1") == backbone.hooks[f"block.{depth - 1}"]
    acts = backbone.extract(images, ["block.0", f"block.{depth - 1}", "final_norm", "pooled"])
    for name in ("block.0", f"block.{depth - 1}", "final_norm"):
        assert backbone.resolve_hook(name).layout == layout
        assert acts[name].shape == (2, 50, 64)
    model = backbone.model
    # the residual stream: final_norm is the LayerNorm of the last block's output, token by token
    torch.testing.assert_close(acts["final_norm"], model.norm(acts[f"block.{depth - 1}"]))
    # the class token comes first: the head reads token 0 of the final-norm output
    torch.testing.assert_close(acts["pooled"][:, 0], acts["final_norm"][:, 0], rtol=0, atol=0)


def test_mlp_has_pooled_hooks_only(images):
    backbone = load_backbone("zoo-mlp", seed=1)
    assert all(hook.kind == "pooled" for hook in backbone.hooks.values())
    acts = backbone.extract(images, ["hidden.0", "pooled"])
    assert acts["hidden.0"].shape == (2, 1, 256) and acts["pooled"].shape == (2, 1, 128)


@pytest.mark.parametrize("name", ["zoo-cnn", "zoo-vit", "zoo-mlp"])
def test_backbone_output_matches_the_model_on_grey_input(name, images):
    """Three identical channels average back to the grey image the models are trained on."""
    backbone = load_backbone(name, seed=2)
    logits = backbone.extract(images, ["logits"])["logits"][:, 0]
    # tolerance: (a + a + a) / 3 differs from a by float32 rounding, amplified a little through the layers
    torch.testing.assert_close(logits, backbone.model(images[:, :1]), rtol=1e-4, atol=1e-5)


def test_same_seed_gives_the_same_random_backbone():
    first, second = load_backbone("zoo-vit", seed=5), load_backbone("zoo-vit", seed=5)
    other = load_backbone("zoo-vit", seed=6)
    assert first.fingerprint() == second.fingerprint() != other.fingerprint()


def test_model_kwargs_shrink_the_registered_model_and_enter_the_fingerprint(images):
    small = load_backbone("zoo-cnn", model_kwargs={"channels": (4, 8, 8)})
    assert small.extract(images, ["features"])["features"].shape == (2, 49, 8)
    assert (
        small.fingerprint()["source"]["config_hash"]
        != load_backbone("zoo-cnn").fingerprint()["source"]["config_hash"]
    )
    with pytest.raises(ValueError, match=r"model_kwargs \['depth'\] are not fields of CNNConfig"):
        load_backbone("zoo-cnn", model_kwargs={"depth": 3})


def test_cnn_grid_follows_the_number_of_stages(images):
    backbone = load_backbone("zoo-cnn", model_kwargs={"channels": (4, 8)})  # one max-pool: 14x14
    assert backbone.hooks["features"].layout.grid == (14, 14)
    assert backbone.extract(images, ["features"])["features"].shape == (2, 196, 8)


def test_meta_device_builds_hooks_without_weights():
    backbone = load_backbone("zoo-vit", device="meta")
    assert backbone.hooks["final_norm"].layout.n_tokens == 50


def test_wrong_image_size_is_refused():
    model = build_model(CNNConfig())
    with pytest.raises(
        ValueError, match=r"zoo models take \(B, 1 or 3, 28, 28\) images, got \(1, 3, 32, 32\)"
    ):
        model(torch.zeros(1, 3, 32, 32))


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: ViTConfig(patch_size=5), "not a multiple of patch_size 5"),
        (lambda: ViTConfig(width=30, heads=4), "not divisible by heads 4"),
        (lambda: CNNConfig(channels=()), "channels must be positive"),
        (lambda: MLPConfig(hidden=(16, 0)), "hidden must be positive"),
    ],
)
def test_bad_configs_say_what_is_wrong(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_unknown_config_type_lists_valid_ones():
    with pytest.raises(TypeError, match="valid configs: CNNConfig, ViTConfig, MLPConfig"):
        build_model(object())


def test_preprocessing_gives_exactly_the_training_input():
    """The cache runner's PIL -> tensor path and training's uint8 -> tensor path give the same numbers."""
    pixels = np.random.default_rng(0).integers(0, 256, size=(28, 28), dtype=np.uint8)
    from_pil = ZOO_PREPROCESSING.transform()(Image.fromarray(pixels))  # (3, 28, 28)
    from_pixels = normalize_pixels(torch.from_numpy(pixels)[None])[0]  # (1, 28, 28)
    assert torch.equal(from_pil, from_pixels.expand(3, -1, -1))
