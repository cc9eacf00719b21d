"""CLIP contrastive loss with the SAE spliced into the CLS position, on a tiny random open_clip model."""

from __future__ import annotations

import math

import pytest
import torch
from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

from saebench.metrics.clip_splice import (
    block_tokens_classifier,
    clip_contrastive_loss,
    image_features_with_cls_replaced,
    spliced_contrastive_losses,
    zero_shot_text_features,
)
from saebench.sae import create_sae

WIDTH = 16


@pytest.fixture
def tiny_clip() -> CLIP:
    torch.manual_seed(0)
    vision = CLIPVisionCfg(layers=2, width=WIDTH, head_width=8, patch_size=8, image_size=16, mlp_ratio=2)
    text = CLIPTextCfg(context_length=6, vocab_size=50, width=16, heads=2, layers=1)
    return CLIP(embed_dim=8, vision_cfg=vision, text_cfg=text).eval()


@pytest.fixture
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return torch.randn(4, 3, 16, 16, generator=generator), torch.randint(0, 50, (4, 6), generator=generator)


def lossless_sae():
    """codes = [relu(x), relu(-x)], decode = relu(x) - relu(-x) = x: an exact reconstruction."""
    sae = create_sae("relu", d_in=WIDTH, n_latents=2 * WIDTH)
    eye = torch.eye(WIDTH)
    with torch.no_grad():
        sae.W_enc.copy_(torch.cat([eye, -eye], dim=1))
        sae.W_dec.copy_(torch.cat([eye, -eye], dim=0))
    return sae


def test_contrastive_loss_by_hand():
    # orthonormal matched pairs, scale 1: logits = I; each cross-entropy is -log(e / (e + 1)) = log(1 + 1/e)
    features = torch.eye(2)
    expected = math.log(1 + math.exp(-1))  # 0.31326
    assert clip_contrastive_loss(features, features, 1.0).item() == pytest.approx(expected)
    # features are normalised first: scaling one side changes nothing
    assert clip_contrastive_loss(3 * features, features, 1.0).item() == pytest.approx(expected)


def test_a_lossless_sae_leaves_the_loss_unchanged(tiny_clip, batch):
    images, texts = batch
    losses = spliced_contrastive_losses(tiny_clip, images, texts, block=0, sae=lossless_sae())
    assert losses.with_sae == pytest.approx(losses.original, abs=1e-5)  # float32 round-off of the identity
    assert losses.zero_ablated != pytest.approx(losses.original, abs=1e-4)
    assert losses.score == pytest.approx(0.0, abs=1e-3)


def test_only_the_cls_position_is_replaced_and_the_hook_is_removed(tiny_clip, batch):
    images, _ = batch
    original = tiny_clip.encode_image(images)
    seen = {}

    def spy(module, inputs, output):
        seen["next_block_input"] = inputs[0].clone()

    handle = tiny_clip.visual.transformer.resblocks[1].register_forward_hook(spy)
    image_features_with_cls_replaced(tiny_clip, images, 0, torch.zeros_like)
    handle.remove()
    assert torch.equal(seen["next_block_input"][:, 0], torch.zeros(4, WIDTH))
    assert seen["next_block_input"][:, 1:].abs().sum() > 0
    assert torch.equal(tiny_clip.encode_image(images), original)


def test_bad_inputs_are_named(tiny_clip, batch):
    images, texts = batch
    with pytest.raises(ValueError, match="out of range"):
        spliced_contrastive_losses(tiny_clip, images, texts, block=5, sae=lossless_sae())
    with pytest.raises(TypeError, match="open_clip CLIP"):
        image_features_with_cls_replaced(torch.nn.Linear(2, 2), images, 0, torch.zeros_like)


def char_tokenizer(texts: list[str]) -> torch.Tensor:
    """A stand-in tokenizer for the tiny model (vocabulary 50, context 6): character codes mod 50."""
    return torch.tensor([[ord(ch) % 50 for ch in (text + "      ")[:6]] for text in texts])


def test_zero_shot_text_features_average_normalised_embeddings(tiny_clip):
    templates = [lambda c: f"a {c}", lambda c: f"the {c}"]
    features = zero_shot_text_features(tiny_clip, char_tokenizer, ["cat", "dog"], templates)
    embeds = torch.nn.functional.normalize(
        tiny_clip.encode_text(char_tokenizer(["a dog", "the dog"])), dim=-1
    )
    assert features.shape == (2, 8)
    assert torch.allclose(features[1], embeds.mean(dim=0))  # the mean, not re-normalised
    assert features[1].norm() < 1.0 + 1e-6


def test_block_classifier_on_the_blocks_own_output_gives_the_models_logits(tiny_clip, batch):
    images, _ = batch
    captured = {}
    handle = tiny_clip.visual.transformer.resblocks[0].register_forward_hook(
        lambda module, inputs, output: captured.setdefault("tokens", output.clone())
    )
    image_features = tiny_clip.encode_image(images)
    handle.remove()
    text_features = torch.randn(3, 8, generator=torch.Generator().manual_seed(2))
    classify = block_tokens_classifier(tiny_clip, 0, text_features)
    expected = (
        tiny_clip.logit_scale.exp() * torch.nn.functional.normalize(image_features, dim=-1) @ text_features.T
    )
    assert torch.allclose(classify(captured["tokens"]), expected, atol=1e-5)  # float32 round-off
    with pytest.raises(ValueError, match="tokens have shape"):
        classify(captured["tokens"][:, :3])
