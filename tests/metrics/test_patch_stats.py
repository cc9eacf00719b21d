"""PatchSAE per-latent and per-class statistics against hand-computed values (patchsae.md §2.1-2.2)."""

from __future__ import annotations

import math

import pytest
import torch

from saebench.metrics.patch_stats import (
    class_latent_statistics,
    dead_latents_in_window,
    image_level_activation,
    latent_frequency,
    latent_label_entropy,
    latent_mean_activation,
    token_counts_above_threshold,
    top_reference_images,
    window_frequency_per_image,
    window_frequency_per_token,
)


@pytest.fixture
def token_codes() -> torch.Tensor:
    """2 images x 3 tokens x 3 latents. Latent 2 never fires; latent 1 fires only in image 1."""
    return torch.tensor(
        [
            [[0.3, 0.0, 0.0], [0.1, 0.0, 0.0], [0.0, 0.0, 0.0]],
            [[0.6, 0.9, 0.0], [0.0, 0.25, 0.0], [0.0, 0.2, 0.0]],
        ]
    )


def test_image_level_activation_is_the_token_mean(token_codes):
    # image 0, latent 0: (0.3 + 0.1 + 0) / 3; image 1, latent 1: (0.9 + 0.25 + 0.2) / 3 = 0.45
    expected = torch.tensor([[0.4 / 3, 0.0, 0.0], [0.2, 0.45, 0.0]])
    assert torch.allclose(image_level_activation(token_codes), expected)


def test_token_counts_use_a_strict_threshold(token_codes):
    # tau = 0.2: 0.3 counts, 0.1 not; in image 1 latent 1 has 0.9 and 0.25 (0.2 is not > 0.2)
    expected = torch.tensor([[1, 0, 0], [1, 2, 0]])
    assert torch.equal(token_counts_above_threshold(token_codes), expected)


def test_class_statistics_sum_counts_per_class(token_codes):
    stats = class_latent_statistics(token_codes, torch.tensor([1, 1]), n_classes=3)
    # both images are class 1: [1+1, 0+2, 0]; classes 0 and 2 have no images
    assert torch.equal(stats, torch.tensor([[0, 0, 0], [2, 2, 0], [0, 0, 0]]))
    split = class_latent_statistics(token_codes, torch.tensor([0, 2]), n_classes=3)
    assert torch.equal(split, torch.tensor([[1, 0, 0], [0, 0, 0], [1, 2, 0]]))


def test_class_statistics_reject_labels_beyond_n_classes(token_codes):
    with pytest.raises(ValueError, match="n_classes"):
        class_latent_statistics(token_codes, torch.tensor([0, 3]), n_classes=3)


def test_frequency_and_mean_activation(token_codes):
    acts = image_level_activation(token_codes)
    # latent 0 is positive in both images, latent 1 in one of two, latent 2 in none
    assert torch.allclose(latent_frequency(acts), torch.tensor([1.0, 0.5, 0.0], dtype=torch.float64))
    mean = latent_mean_activation(acts)
    # latent 0: (0.4/3 + 0.2) / 2 = 1/6; latent 1: 0.45 / 1; latent 2: 0 / 0 = NaN as in the authors' code
    assert mean[0].item() == pytest.approx(1 / 6)
    assert mean[1].item() == pytest.approx(0.45)
    assert math.isnan(mean[2].item())


def test_top_reference_images_are_sorted_highest_first():
    acts = torch.tensor([[0.1, 3.0], [0.5, 1.0], [0.2, 2.0]])
    values, indices = top_reference_images(acts, k=2)
    assert torch.equal(indices, torch.tensor([[1, 0], [2, 2]]))
    assert torch.equal(values, torch.tensor([[0.5, 3.0], [0.2, 2.0]]))


def test_label_entropy_by_hand():
    # 4 images, k = 2 reference images per latent.
    acts = torch.tensor([[3.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.5, 0.0, 0.0], [0.0, 0.0, 2.0]])
    labels = torch.tensor([0, 1, 0, 1])
    entropy = latent_label_entropy(acts, labels, k=2)
    # latent 0: references images 0 (3.0, label 0) and 1 (1.0, label 1): p = (0.75, 0.25)
    expected0 = -(0.75 * math.log(0.75 + 1e-9) + 0.25 * math.log(0.25 + 1e-9))  # 0.5623
    # latent 1: images 0 and 1, 1.0 each, labels 0 and 1: p = (0.5, 0.5), entropy ln 2
    # latent 2: only one image with a positive activation, fewer than k = 2 references: -1
    assert entropy[0].item() == pytest.approx(expected0, abs=1e-9)
    assert entropy[1].item() == pytest.approx(math.log(2), abs=1e-8)  # 1e-9 inside the log shifts it by ~1e-9
    assert entropy[2].item() == -1.0


def test_label_entropy_is_zero_for_one_label():
    acts = torch.tensor([[2.0], [1.0], [0.0]])
    entropy = latent_label_entropy(acts, torch.tensor([4, 4, 0]), k=2)
    assert entropy.item() == pytest.approx(0.0, abs=1e-8)  # -1 * ln(1 + 1e-9) = -1e-9


def test_window_frequencies_logged_and_corrected(token_codes):
    logged = window_frequency_per_image(token_codes)
    # token firings: latent 0 fires on 3 tokens, latent 1 on 3, latent 2 on 0; divided by 2 images
    assert torch.allclose(logged, torch.tensor([1.5, 1.5, 0.0], dtype=torch.float64))
    corrected = window_frequency_per_token(token_codes)
    # the same counts over 6 tokens
    assert torch.allclose(corrected, torch.tensor([0.5, 0.5, 0.0], dtype=torch.float64))
    assert torch.equal(dead_latents_in_window(logged), torch.tensor([False, False, True]))
    assert torch.equal(dead_latents_in_window(corrected), torch.tensor([False, False, True]))


def test_bad_shapes_are_named():
    with pytest.raises(ValueError, match="n_images, n_tokens, n_latents"):
        image_level_activation(torch.zeros(4, 5))
    with pytest.raises(ValueError, match="image_level_activation"):
        latent_frequency(torch.zeros(2, 3, 4))
    with pytest.raises(ValueError, match="integer class ids"):
        class_latent_statistics(torch.zeros(2, 3, 4), torch.tensor([0.0, 1.0]), n_classes=2)


def test_label_entropy_groups_references_that_share_a_label():
    # references 3.0 (label 5), 2.0 (label 1), 1.0 (label 5): sum_5 = 4, sum_1 = 2, p = (2/3, 1/3)
    acts = torch.tensor([[3.0], [2.0], [1.0]])
    expected = -(2 / 3 * math.log(2 / 3 + 1e-9) + 1 / 3 * math.log(1 / 3 + 1e-9))  # 0.6365
    entropy = latent_label_entropy(acts, torch.tensor([5, 1, 5]), k=3)
    assert entropy.item() == pytest.approx(expected, abs=1e-12)  # float64 round-off only
