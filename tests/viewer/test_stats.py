"""Per-latent statistics against a hand-computed example (definitions: saebench/viewer/stats.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from saebench.metrics import patch_stats
from saebench.viewer.stats import LatentStatsAccumulator

# 3 images x 2 tokens x 2 latents; labels [0, 1, 1]; tau 0.2.
CODES = torch.tensor(
    [
        [[1.0, 0.0], [0.0, 0.1]],
        [[0.4, 0.0], [0.2, 0.0]],
        [[0.0, 0.0], [0.0, 0.3]],
    ]
)
LABELS = torch.tensor([0, 1, 1])
# Image-level means a_img (mean over the 2 tokens): image 0 [0.5, 0.05], image 1 [0.3, 0], image 2 [0, 0.15].
TOL = 1e-6  # the codes are float32; every value below is exact to ~1e-7


def finish(top_n: int, chunks: list[slice]):
    acc = LatentStatsAccumulator(n_latents=2, n_classes=2, top_n=top_n, tau=0.2)
    for chunk in chunks:
        acc.update(CODES[chunk], LABELS[chunk])
    return acc.finish()


@pytest.mark.parametrize("chunks", [[slice(0, 3)], [slice(0, 1), slice(1, 2), slice(2, 3)]])
def test_hand_computed_statistics(chunks):
    stats = finish(top_n=2, chunks=chunks)
    # frequency: latent 0 has a_img > 0 on images 0, 1; latent 1 on images 0, 2 -> 2/3 each.
    np.testing.assert_allclose(stats.frequency, [2 / 3, 2 / 3], atol=TOL)
    # tokens > 0: latent 0 has 1.0, 0.4, 0.2 of 6 tokens; latent 1 has 0.1, 0.3.
    np.testing.assert_allclose(stats.token_frequency, [3 / 6, 2 / 6], atol=TOL)
    # mean activation: (0.5 + 0.3) / 2 = 0.4 and (0.05 + 0.15) / 2 = 0.1.
    np.testing.assert_allclose(stats.mean_activation, [0.4, 0.1], atol=TOL)
    np.testing.assert_allclose(stats.max_activation, [1.0, 0.3], atol=TOL)
    np.testing.assert_array_equal(stats.top_images, [[0, 1], [2, 0]])
    np.testing.assert_allclose(stats.top_values, [[0.5, 0.3], [0.15, 0.05]], atol=TOL)
    # Entropy, latent 0: class 0 carries 0.5, class 1 0.3 -> p = (0.625, 0.375),
    #   H = 0.625 * 0.470004 + 0.375 * 0.980829 = 0.661563 nats.
    # Latent 1: class 1 carries 0.15, class 0 0.05 -> p = (0.25, 0.75), H = 0.346574 + 0.215762 = 0.562335.
    np.testing.assert_allclose(
        stats.label_entropy, [0.661563, 0.562335], atol=1e-5
    )  # 6-digit hand arithmetic
    # Counts of tokens > 0.2 per class: latent 0 has 1.0 (class 0) and 0.4 (class 1); 0.2 is not > 0.2.
    # Latent 1 has only 0.3 (class 1).
    np.testing.assert_array_equal(stats.class_counts, [[1, 1], [0, 1]])


def test_too_few_reference_images_give_entropy_minus_one_and_empty_slots():
    stats = finish(top_n=3, chunks=[slice(0, 3)])
    np.testing.assert_array_equal(stats.top_images, [[0, 1, -1], [2, 0, -1]])
    np.testing.assert_array_equal(stats.label_entropy, [-1.0, -1.0])
    assert stats.top_values[0, 2] == 0


def test_dead_latent_has_nan_mean_and_no_top_images():
    acc = LatentStatsAccumulator(n_latents=3, n_classes=0, top_n=2)
    acc.update(torch.nn.functional.pad(CODES, (0, 1)), None)
    stats = acc.finish()
    assert stats.frequency[2] == 0 and math.isnan(stats.mean_activation[2])
    np.testing.assert_array_equal(stats.top_images[2], [-1, -1])
    np.testing.assert_array_equal(stats.label_entropy, [-1.0, -1.0, -1.0])  # no labels: the -1 rule
    assert stats.class_counts.shape == (3, 0)


def test_ties_go_to_the_smaller_image_index():
    acc = LatentStatsAccumulator(n_latents=1, n_classes=0, top_n=2)
    for _ in range(3):
        acc.update(torch.ones(1, 2, 1), None)
    np.testing.assert_array_equal(acc.finish().top_images, [[0, 1]])


def test_no_images_is_an_error():
    with pytest.raises(ValueError, match="no images"):
        LatentStatsAccumulator(n_latents=2, n_classes=0, top_n=1).finish()


def test_streaming_matches_the_dense_patch_stats_on_the_planted_world(world):
    codes, labels = torch.from_numpy(world.codes), torch.from_numpy(world.labels)
    acc = LatentStatsAccumulator(n_latents=codes.shape[2], n_classes=6, top_n=4)
    for start in range(0, len(codes), 7):  # uneven chunks: 7, 7, 7, 3
        acc.update(codes[start : start + 7], labels[start : start + 7])
    stats = acc.finish()
    image_acts = patch_stats.image_level_activation(codes)
    np.testing.assert_allclose(stats.frequency, patch_stats.latent_frequency(image_acts))
    np.testing.assert_allclose(
        stats.mean_activation, patch_stats.latent_mean_activation(image_acts), rtol=1e-6
    )
    np.testing.assert_allclose(
        stats.label_entropy, patch_stats.latent_label_entropy(image_acts, labels, k=4), atol=1e-9
    )
    np.testing.assert_array_equal(
        stats.class_counts, patch_stats.class_latent_statistics(codes, labels, n_classes=6).T
    )
    values, _ = patch_stats.top_reference_images(image_acts, k=4)
    np.testing.assert_allclose(stats.top_values, values.clamp_min(0).T, rtol=1e-6)  # float32 sum/T vs mean
    few = ((image_acts > 0).sum(dim=0) < 4).numpy()
    assert few.any() and not few.all()  # the world exercises both sides of the -1 rule
    np.testing.assert_array_equal(stats.label_entropy == -1, few)
