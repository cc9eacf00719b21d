"""SharedForward: several cache passes over the same images run the backbone once per image."""

from __future__ import annotations

import pytest
import torch

from saebench.acts.backbones import load_backbone
from saebench.zoo.shared_forward import SharedForward


def test_later_passes_are_served_from_the_memo_with_the_direct_values():
    backbone = load_backbone("zoo-vit", seed=0, model_kwargs={"width": 16, "depth": 2, "heads": 2})
    images = torch.randn(4, 3, 28, 28, generator=torch.Generator().manual_seed(0))
    direct = backbone.extract(images, ["block.-1", "pooled", "final_norm"])
    shared = SharedForward(backbone, [["block.-1"], ["pooled"], ["final_norm"]])

    first = shared.extract(images, ["block.-1"])  # computes all three hooks, returns one
    assert (shared.misses, shared.hits, shared.pending_images) == (4, 0, 4)
    torch.testing.assert_close(first["block.-1"], direct["block.-1"], rtol=0, atol=0)

    # a later pass in other batches (2 + 2 images) is served image by image, and the memo empties
    second = [shared.extract(images[i : i + 2], ["pooled"])["pooled"] for i in (0, 2)]
    third = shared.extract(images, ["final_norm"])
    assert (shared.misses, shared.hits, shared.pending_images) == (4, 8, 0)
    torch.testing.assert_close(torch.cat(second), direct["pooled"], rtol=0, atol=0)
    torch.testing.assert_close(third["final_norm"], direct["final_norm"], rtol=0, atol=0)


def test_unseen_images_are_computed_and_only_later_passes_are_kept():
    backbone = load_backbone("zoo-cnn", seed=0, model_kwargs={"channels": (4, 8, 8)})
    shared = SharedForward(backbone, [["features"], ["pooled"]])
    images = torch.randn(2, 3, 28, 28, generator=torch.Generator().manual_seed(1))
    # a resumed run: the features pass was complete, so the pooled pass meets images it has not seen
    out = shared.extract(images, ["pooled"])
    torch.testing.assert_close(out["pooled"], backbone.extract(images, ["pooled"])["pooled"], rtol=0, atol=0)
    assert shared.misses == 2 and shared.pending_images == 0  # no later pass: nothing is kept
    assert shared.fingerprint() == backbone.fingerprint() and shared.name == backbone.name
    with pytest.raises(ValueError, match="not \\['logits'\\]"):
        shared.extract(images, ["logits"])
