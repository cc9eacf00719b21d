"""Deterministic zoo training: the same config and seed give bitwise-identical weights and accuracy."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from saebench.zoo import load_fashion_mnist, train_entry
from saebench.zoo.train import TrainSettings, augment, lr_factor


def _same_state(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("role", ["zoo-cnn", "zoo-vit"])
def test_same_config_and_seed_give_bitwise_identical_weights(role, tiny_entries, fashion_mnist):
    entry = tiny_entries[role]
    first, second = train_entry(entry), train_entry(entry)
    assert _same_state(first.model, second.model)
    assert first.record["state_dict_sha256"] == second.record["state_dict_sha256"]
    assert first.accuracy == second.accuracy
    assert first.record["history"][0]["loss"] == second.record["history"][0]["loss"]
    reseeded = train_entry(dataclasses.replace(entry, training=dataclasses.replace(entry.training, seed=1)))
    assert not _same_state(first.model, reseeded.model)


def test_training_learns_and_leaves_the_global_rng_alone(tiny_entries, fashion_mnist):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    entry = tiny_entries["zoo-cnn"]
    entry = dataclasses.replace(
        entry, training=dataclasses.replace(entry.training, epochs=4, train_images=2048)
    )
    trained = train_entry(entry)
    assert torch.equal(torch.rand(3), expected)
    # 10 balanced classes: chance is 0.1; 128 steps of this tiny CNN reach several times that
    assert trained.accuracy > 0.4
    losses = [epoch["loss"] for epoch in trained.record["history"]]
    assert losses[-1] < losses[0]
    assert trained.record["test_data"]["n_images"] == 10_000 and trained.record["test_data"]["first_n"] == 200


def test_lr_factor_warms_up_linearly_then_decays_by_cosine():
    # 10 steps, 2 of warm-up: steps 0, 1 -> 1/2, 2/2; then t = (step - 2) / 8
    assert [lr_factor(s, 10, 2) for s in (0, 1)] == [0.5, 1.0]
    assert lr_factor(2, 10, 2) == 1.0  # cos(0)
    assert lr_factor(6, 10, 2) == pytest.approx(0.5 * (1 + math.cos(math.pi * 4 / 8)))  # = 0.5
    assert lr_factor(9, 10, 2) == pytest.approx(0.5 * (1 + math.cos(math.pi * 7 / 8)))


def test_augment_flips_left_right_or_leaves_alone():
    pixels = torch.arange(2 * 2 * 3, dtype=torch.uint8).reshape(2, 2, 3)
    assert torch.equal(augment(pixels, False, torch.Generator()), pixels)
    flipped = augment(pixels.repeat(8, 1, 1), True, torch.Generator().manual_seed(0))
    per_image = [
        torch.equal(img, pixels[i % 2]) or torch.equal(img, pixels[i % 2].flip(-1))
        for i, img in enumerate(flipped)
    ]
    assert all(per_image)
    assert any(not torch.equal(img, pixels[i % 2]) for i, img in enumerate(flipped))  # 16 coin tosses


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"epochs": 0}, "epochs must be an int >= 1"),
        ({"lr": 0.0}, "needs lr > 0"),
        ({"warmup_fraction": 1.0}, "warmup"),
    ],
)
def test_bad_settings_are_refused(changes, message):
    with pytest.raises(ValueError, match=message):
        TrainSettings(**changes)


def test_missing_fashion_mnist_says_how_to_get_it(tmp_path, tiny_entries):
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        train_entry(tiny_entries["zoo-cnn"], data_root=tmp_path)


def test_first_n_must_fit_the_split(fashion_mnist):
    with pytest.raises(ValueError, match=r"first_n must be an int in 1..10000"):
        load_fashion_mnist("test", first_n=10_001)
