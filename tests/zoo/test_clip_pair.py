"""The frozen MiniLM text tower, the captions, the contrastive loss and the CLIP-like image tower."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from saebench.acts.backbones import load_backbone
from saebench.zoo import ClipPair, text_encoder, train_entry
from saebench.zoo.clip_pair import LogitScale, contrastive_loss, zero_shot_weights
from saebench.zoo.text import CAPTION_TEMPLATES, CLASS_WORDS, ZERO_SHOT_TEMPLATES, caption, caption_bank


@pytest.fixture(scope="module")
def text():
    return text_encoder()


def test_caption_bank_has_every_template_with_every_word():
    captions, classes = caption_bank()
    assert len(captions) == len(CLASS_WORDS) * len(CLASS_WORDS[0]) * len(CAPTION_TEMPLATES) == 320
    assert torch.equal(torch.bincount(classes), torch.full((10,), 32))
    assert captions[0] == "a photo of a t-shirt."
    assert "a photo of an ankle boot." in captions and "a small image of the ankle boot." in captions
    assert set(ZERO_SHOT_TEMPLATES).isdisjoint(CAPTION_TEMPLATES)


def test_caption_picks_the_article():
    assert caption("this is {a}.", "overcoat") == "this is an overcoat."
    assert caption("this is {a}.", "bag") == "this is a bag."


def test_contrastive_loss_matches_the_hand_computed_infonce():
    # two pairs, different captions: logits = s * I @ T^T
    image = F.normalize(torch.tensor([[1.0, 0.0], [1.0, 1.0]]), dim=-1)
    texts = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    s = torch.tensor(2.0)
    logits = s * image @ texts.T  # [[2, 0], [sqrt2, sqrt2]]
    row = -(logits.diag() - logits.logsumexp(dim=1)).mean()
    col = -(logits.diag() - logits.logsumexp(dim=0)).mean()
    loss = contrastive_loss(image, texts, torch.tensor([0, 1]), s)
    assert loss.item() == pytest.approx(0.5 * (row + col).item(), rel=1e-6)
    # by hand: image 1 -> text 1 has logits (sqrt2, sqrt2): its cross-entropy is log 2
    assert -(logits[1, 1] - logits[1].logsumexp(0)).item() == pytest.approx(math.log(2))


def test_pairs_sharing_a_caption_are_positives_of_each_other():
    image = F.normalize(torch.randn(3, 4, generator=torch.Generator().manual_seed(0)), dim=-1)
    texts = F.normalize(torch.randn(3, 4, generator=torch.Generator().manual_seed(1)), dim=-1)
    texts[1] = texts[0]  # pairs 0 and 1 carry the same caption
    s = torch.tensor(5.0)
    logits = s * image @ texts.T
    # targets: pair 0 and 1 each split their mass over columns (rows) 0 and 1; pair 2 is its own positive
    targets = torch.tensor([[0.5, 0.5, 0.0], [0.5, 0.5, 0.0], [0.0, 0.0, 1.0]])
    image_to_text = -(targets * logits.log_softmax(dim=1)).sum(dim=1).mean()
    text_to_image = -(targets * logits.T.log_softmax(dim=1)).sum(dim=1).mean()
    loss = contrastive_loss(image, texts, torch.tensor([7, 7, 3]), s)
    assert loss.item() == pytest.approx(0.5 * (image_to_text + text_to_image).item(), rel=1e-6)


def test_logit_scale_starts_at_one_over_0_07_and_is_clipped_at_100():
    scale = LogitScale()
    assert scale().item() == pytest.approx(1 / 0.07)
    with torch.no_grad():
        scale.log_scale.fill_(10.0)
    assert scale().item() == 100.0


def test_text_tower_gives_unit_norm_384d_embeddings_that_rank_synonyms(text):
    emb = text.encode(["a photo of a sneaker.", "a photo of a running shoe.", "a photo of a handbag."])
    assert emb.shape == (3, 384)
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(3))
    # real MiniLM weights: a sneaker is nearer a running shoe than a handbag
    assert emb[0] @ emb[1] > emb[0] @ emb[2]
    # the token-id path (the backbone's TextTower) gives the same embeddings
    ids = text.tokenize(["a photo of a sneaker.", "a bag"])
    torch.testing.assert_close(text.encode_ids(ids)[0], emb[0], rtol=1e-5, atol=1e-6)  # padding masked out


def test_text_tower_refuses_a_bare_string(text):
    with pytest.raises(TypeError, match="list of strings"):
        text.encode("a boot")


def test_zero_shot_weights_average_each_class_prompts(text):
    weights = zero_shot_weights(text, templates=("a photo of {a}.",))
    expected = text.encode(["a photo of a t-shirt."])[0]
    torch.testing.assert_close(weights[0], expected)  # one template: the prompt's own embedding
    assert weights.shape == (10, 384)


def test_clip_backbone_has_an_embed_hook_and_a_text_tower():
    backbone = load_backbone("zoo-clip", seed=0)
    assert backbone.hooks["embed"].width == 384 and "logits" not in backbone.hooks
    images = torch.randn(2, 3, 28, 28)
    assert backbone.extract(images, ["embed", "block.-1"])["block.-1"].shape == (2, 50, 64)
    words = backbone.encode_text(["boot", "bag", "dress"])
    assert words.shape == (3, 384)
    assert backbone.fingerprint()["text"]["model"] == "sentence-transformers/all-MiniLM-L6-v2"


def test_clip_tower_training_aligns_images_to_their_class_captions(tiny_entries, text, fashion_mnist):
    trained = train_entry(tiny_entries["zoo-clip"])
    record = trained.record
    assert record["n_captions"] == 320 and record["text"]["weights_sha256"]
    # 10 classes: chance is 0.1; 96 steps of a one-block tower reach several times that (about 0.6)
    assert 0.3 < trained.accuracy <= 1.0
    pair = ClipPair(trained.model, text)
    sims = pair.similarity(torch.zeros(1, 1, 28, 28), ["a boot", "a dress"])
    assert sims.shape == (1, 2) and sims.abs().max() <= 1.0 + 1e-6  # cosines
