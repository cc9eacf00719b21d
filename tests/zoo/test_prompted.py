"""The prompt-adapted zoo ViT (saebench.zoo.prompted): frozen shared weights, deep prompts, hooks, cache."""

from __future__ import annotations

import pytest
import torch

from saebench.zoo import TrainSettings, ViTConfig, ZooViT
from saebench.zoo.data import LabelledImages, normalize_pixels
from saebench.zoo.prompted import (
    PromptConfig,
    PromptedEntry,
    PromptedViT,
    TrainedPrompts,
    cls_and_patches,
    ensure_prompted,
    in_domain,
    per_class_first,
    prompted_backbone,
    split_accuracy,
    train_prompts,
)

TINY_VIT = ViTConfig(width=16, depth=2, heads=2)


def _tiny_model(depth: int = 2, n_prompts: int = 2) -> PromptedViT:
    torch.manual_seed(0)
    return PromptedViT(ZooViT(TINY_VIT).eval(), PromptConfig(n_prompts=n_prompts, depth=depth))


def _random_images(n: int, classes: tuple[int, ...], seed: int = 0) -> LabelledImages:
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (n, 28, 28), dtype=torch.uint8, generator=generator)
    labels = torch.tensor(classes)[torch.arange(n) % len(classes)]
    return LabelledImages(pixels, labels, {"kind": "random"})


def test_training_moves_only_the_prompts():
    model = _tiny_model()
    vit_before = {k: v.clone() for k, v in model.vit.state_dict().items()}
    prompts_before = model.prompts.tokens.detach().clone()
    settings = TrainSettings(epochs=2, batch_size=16, lr=1e-2, weight_decay=0.0)
    history = train_prompts(model, settings, _random_images(64, (0, 1, 2)), (0, 1, 2))
    assert len(history) == 2 and all(torch.isfinite(torch.tensor(h["loss"])) for h in history)
    for key, value in model.vit.state_dict().items():
        assert torch.equal(value, vit_before[key]), key
    assert not torch.equal(model.prompts.tokens, prompts_before)
    assert all(not p.requires_grad for p in model.vit.parameters())


def test_prompts_in_register_slot_equal_maple_prompts_appended_at_the_end():
    """MaPLe appends its prompts after the patches and replaces them before each prompted block; attention
    is permutation-equivariant, so the CLS and patch outputs must not depend on where the prompts sit."""
    model = _tiny_model(depth=2)
    vit, tokens = model.vit, model.prompts.tokens
    images = normalize_pixels(_random_images(3, (0,)).pixels)
    with torch.no_grad():
        patches = vit.patch_embed(images).flatten(2).transpose(1, 2)
        x = torch.cat([vit.cls_token.expand(3, -1, -1), patches], dim=1) + vit.pos_embed
        x = vit.blocks[0](torch.cat([x, tokens[0].expand(3, -1, -1)], dim=1))
        x = vit.blocks[1](torch.cat([x[:, :-2], tokens[1].expand(3, -1, -1)], dim=1))
        maple_order = torch.cat([x[:, :1], x[:, -2:], x[:, 1:-2]], dim=1)  # -> [cls, prompts, patches]
        ours = model.residual_stream(images)
    assert ours.shape == (3, 1 + 2 + 49, 16)
    torch.testing.assert_close(ours, maple_order, rtol=0, atol=1e-5)  # float32 sums in another order


def test_each_prompted_block_reads_its_own_prompts():
    model = _tiny_model(depth=2)
    images = normalize_pixels(_random_images(2, (0,)).pixels)
    with torch.no_grad():
        before = model.residual_stream(images)
        model.prompts.tokens[1] += 1.0  # block 1's prompts: block 0's prompt outputs are overwritten
        after = model.residual_stream(images)
    assert not torch.allclose(before, after)
    shallow = _tiny_model(depth=1)
    shallow.prompts.tokens.data.copy_(model.prompts.tokens.data[:1])
    with torch.no_grad():
        assert not torch.allclose(shallow.residual_stream(images), after)


def test_backbone_hooks_read_the_residual_stream_with_prompts_as_registers(tiny_entries):
    model = _tiny_model(depth=1, n_prompts=3)
    assert tiny_entries["zoo-vit"].model == TINY_VIT
    entry = PromptedEntry("tiny", tiny_entries["zoo-vit"], PromptConfig(3, 1), TrainSettings())
    backbone = prompted_backbone(TrainedPrompts(entry, model, {}))
    images = normalize_pixels(_random_images(2, (0,)).pixels).expand(-1, 3, -1, -1)
    out = backbone.extract(images, ["block.-1", "logits"])
    assert out["block.-1"].shape == (2, 1 + 3 + 49, 16)
    torch.testing.assert_close(out["block.-1"], model.residual_stream(images), rtol=0, atol=0)
    torch.testing.assert_close(out["logits"][:, 0], model(images), rtol=0, atol=0)
    kept = cls_and_patches(out["block.-1"], model.layout)
    assert kept.shape == (2, 50, 16)
    torch.testing.assert_close(kept[:, 1:], out["block.-1"][:, 4:], rtol=0, atol=0)


def test_split_accuracy_classifies_among_the_split_only():
    class Fixed(torch.nn.Module):
        """Logits: class 9 scores 10, class 2 scores 3, class 0 scores 2, classes 1 and 3 score 1."""

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            logits = torch.zeros(len(images), 10)
            logits[:, 9] = 10.0
            logits[:, 0] = 2.0
            logits[:, 1:4] = torch.tensor([1.0, 3.0, 1.0])  # class 2 beats 0, 1, 3 among the base
            return logits

    data = _random_images(8, (0, 2))  # four images of class 0, four of class 2
    # among (0, 1, 2, 3) the argmax is class 2 for every image: the class-2 half is right -> 4 / 8
    assert split_accuracy(Fixed(), data, (0, 1, 2, 3)) == 0.5
    assert split_accuracy(Fixed(), data, (0,)) == 1.0  # the class-0 images among class 0 alone


def test_per_class_first_takes_the_first_images_of_each_class():
    data = LabelledImages(torch.zeros(6, 28, 28, dtype=torch.uint8), torch.tensor([1, 0, 1, 2, 1, 0]), {})
    picked = per_class_first(data, (1, 0), 2)
    assert picked.labels.tolist() == [1, 0, 1, 0]  # rows 0, 1, 2, 5 in file order
    with pytest.raises(ValueError, match="class 2 has 1 images"):
        per_class_first(data, (2,), 2)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"base_classes": (0, 10)}, "base_classes must be distinct"),
        ({"base_classes": tuple(range(10))}, "leaving at least one novel class"),
        ({"shots_per_class": 0}, "shots_per_class"),
    ],
)
def test_bad_entries_are_refused(change, message, tiny_entries):
    with pytest.raises(ValueError, match=message):
        PromptedEntry("bad", tiny_entries["zoo-vit"], PromptConfig(), TrainSettings(), **change)


def test_prompt_depth_cannot_exceed_the_blocks():
    with pytest.raises(ValueError, match="exceeds the ViT's 2 blocks"):
        PromptedViT(ZooViT(TINY_VIT), PromptConfig(depth=3))


def test_cache_round_trip_and_determinism(fashion_mnist, zoo_cache, tiny_entries):
    entry = PromptedEntry(
        "tiny-prompted",
        tiny_entries["zoo-vit"],
        PromptConfig(n_prompts=2, depth=1),
        TrainSettings(epochs=1, batch_size=32, lr=1e-2, weight_decay=0.0, test_images=200),
        base_classes=(0, 1, 2, 3, 4),
        shots_per_class=16,
    )
    trained = ensure_prompted(entry)
    assert trained.entry.folder().parent == zoo_cache / "zoo"
    accuracy = trained.record["accuracy"]
    assert set(accuracy) == {"frozen", "prompted"}
    assert all(0.0 <= accuracy[m][s] <= 1.0 for m in accuracy for s in ("base", "novel"))
    loaded = ensure_prompted(entry)
    assert torch.equal(loaded.model.prompts.tokens, trained.model.prompts.tokens)
    assert loaded.record == trained.record
    retrained = ensure_prompted(entry, retrain=True)
    assert torch.equal(retrained.model.prompts.tokens, trained.model.prompts.tokens)
    other_seed = ensure_prompted(entry.with_seed(1))
    assert other_seed.entry.folder() != trained.entry.folder()
    assert not torch.equal(other_seed.model.prompts.tokens, trained.model.prompts.tokens)


def test_low_contrast_domain_fades_pixels():
    data = LabelledImages(torch.tensor([[[0, 100, 255]]], dtype=torch.uint8), torch.tensor([3]), {})
    faded = in_domain(data, "low_contrast")
    assert faded.pixels.tolist() == [[[40, 80, 142]]]  # 0.4 * (0, 100, 255) + 40 = 40, 80, 142
    assert in_domain(data, "original") is data
    with pytest.raises(ValueError, match="unknown domain 'inverted'"):
        in_domain(data, "inverted")
