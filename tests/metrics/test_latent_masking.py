"""Top-k latent masking (patchsae.md §2.5) on an identity SAE: every prediction traced by hand."""

from __future__ import annotations

import pytest
import torch

from saebench.metrics.latent_masking import (
    class_top_latents,
    classification_accuracy,
    mask_codes_to_latents,
    masked_classification_accuracy,
    masking_sweep,
    masking_sweep_logits,
    mean_reconstruction_offset,
)
from saebench.sae import create_sae


@pytest.fixture
def identity_sae():
    """d = h = 3, W_enc = W_dec = I, zero biases: codes = relu(x) and decode(codes) = codes."""
    sae = create_sae("relu", d_in=3, n_latents=3)
    with torch.no_grad():
        sae.W_enc.copy_(torch.eye(3))
        sae.W_dec.copy_(torch.eye(3))
    return sae


@pytest.fixture
def images() -> tuple[torch.Tensor, torch.Tensor]:
    """4 images of 2 tokens; the classifier below predicts argmax of the token sum.
    Sums: [3,1,0] -> 0 (label 0), [0,3,1] -> 1 (label 1), [3,2,0] -> 0 (label 1, wrong),
    [1,0,2] -> 2 (label 2)."""
    tokens = torch.tensor(
        [
            [[2.0, 1.0, 0.0], [1.0, 0.0, 0.0]],
            [[0.0, 2.0, 1.0], [0.0, 1.0, 0.0]],
            [[3.0, 1.0, 0.0], [0.0, 1.0, 0.0]],
            [[0.0, 0.0, 1.0], [1.0, 0.0, 1.0]],
        ]
    )
    return tokens, torch.tensor([0, 1, 1, 2])


def sum_classifier(tokens: torch.Tensor) -> torch.Tensor:
    return tokens.sum(dim=1)


# class statistics: class 0 favours latent 0, class 1 latent 1 then 2, class 2 latent 2
CLASS_STATS = torch.tensor([[5, 1, 0], [0, 4, 2], [1, 0, 3]])


def test_class_top_latents_descending_with_stable_ties():
    assert torch.equal(class_top_latents(CLASS_STATS, 2), torch.tensor([[0, 1], [1, 2], [2, 0]]))
    assert torch.equal(class_top_latents(torch.tensor([[1, 2, 2]]), 2), torch.tensor([[1, 2]]))


def test_mask_codes_on_and_off():
    codes = torch.tensor([[[1.0, 2.0, 3.0]], [[4.0, 5.0, 6.0]]])
    latents = torch.tensor([[0], [2]])
    assert torch.equal(
        mask_codes_to_latents(codes, latents, "on"), torch.tensor([[[1.0, 0, 0]], [[0, 0, 6.0]]])
    )
    assert torch.equal(
        mask_codes_to_latents(codes, latents, "off"), torch.tensor([[[0, 2.0, 3.0]], [[4.0, 5.0, 0]]])
    )
    with pytest.raises(ValueError, match="mode"):
        mask_codes_to_latents(codes, latents, "keep")


def test_classification_accuracy_macro_and_micro():
    logits = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    acc = classification_accuracy(logits, torch.tensor([0, 1, 1]), n_classes=3)
    # recall: class 0 1/1, class 1 1/2, class 2 has no images (NaN, left out of the macro mean)
    assert acc.macro == pytest.approx(75.0)
    assert acc.micro == pytest.approx(200 / 3)
    assert torch.isnan(acc.per_class_recall[2])


def test_masked_accuracy_by_hand(identity_sae, images):
    tokens, labels = images
    top1 = class_top_latents(CLASS_STATS, 1)
    on = masked_classification_accuracy(
        identity_sae, tokens, labels, top1, sum_classifier, "on", batch_size=3
    )
    # keeping only the true class's top latent makes every image right
    assert (on.macro, on.micro) == (pytest.approx(100.0), pytest.approx(100.0))
    off = masked_classification_accuracy(identity_sae, tokens, labels, top1, sum_classifier, "off")
    # removing it: sums [0,1,0] -> 1, [0,0,1] -> 2, [3,0,0] -> 0, [1,0,0] -> 0: all wrong
    assert (off.macro, off.micro) == (0.0, 0.0)


def test_sweep_rows_and_the_all_off_chance_level(identity_sae, images):
    tokens, labels = images
    rows = masking_sweep(identity_sae, tokens, labels, CLASS_STATS, [1, 3], sum_classifier, offset=1.0)
    assert list(rows) == ["no_sae", "on_1", "off_1", "on_3", "off_3"]
    # no SAE: recall 100 / 50 / 100 -> macro 83.33, micro 3/4
    assert rows["no_sae"].macro == pytest.approx(250 / 3)
    assert rows["no_sae"].micro == pytest.approx(75.0)
    # "on all" is the plain reconstruction (identity here; the offset adds 2 to every class sum)
    assert rows["on_3"].macro == pytest.approx(250 / 3)
    # "off all": every image gives equal logits, argmax picks class 0: recall 100 / 0 / 0 -> macro 100/3
    assert rows["off_3"].macro == pytest.approx(100 / 3)
    assert rows["off_3"].micro == pytest.approx(25.0)


def test_sweep_logits_over_chunks_equal_the_whole(identity_sae, images):
    tokens, labels = images
    whole = masking_sweep_logits(identity_sae, tokens, labels, CLASS_STATS, [2], sum_classifier)
    parts = [
        masking_sweep_logits(
            identity_sae, tokens[s : s + 2], labels[s : s + 2], CLASS_STATS, [2], sum_classifier
        )
        for s in (0, 2)
    ]
    for name, logits in whole.items():
        assert torch.equal(torch.cat([part[name] for part in parts]), logits)


def test_mean_reconstruction_offset_by_hand(identity_sae):
    # relu removes the -3: x - x_hat = [-3, 0, 0], mean -1
    assert mean_reconstruction_offset(identity_sae, torch.tensor([[[-3.0, 0.0, 0.0]]])) == pytest.approx(-1.0)
