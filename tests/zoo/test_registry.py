"""The zoo cache (keyed by config hash, under $SAEBENCH_CACHE) and the registered backbones' weights."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from saebench.acts.backbones import WeightsNotFoundError, load_backbone
from saebench.zoo import (
    ENTRIES,
    SMOKE_ENTRIES,
    TrainedModel,
    build_model,
    ensure_trained,
    load_trained,
    registry,
)
from saebench.zoo.registry import backbone_of, cache_root, get_entry, save_trained


def _fake_trained(entry, seed: int = 0) -> TrainedModel:
    """A randomly initialised model saved as if trained (no training needed to test the cache)."""
    torch.manual_seed(seed)
    return TrainedModel(
        entry, build_model(entry.model).eval(), {"test_accuracy": 0.5, "zero_shot_accuracy": 0.5}
    )


def test_config_hash_follows_every_field_but_the_name():
    entry = ENTRIES["zoo-cnn"]
    assert entry.config_hash() == dataclasses.replace(entry, name="other", description="x").config_hash()
    changed = [
        dataclasses.replace(entry, model=dataclasses.replace(entry.model, channels=(8, 16, 32))),
        dataclasses.replace(entry, training=dataclasses.replace(entry.training, seed=1)),
        dataclasses.replace(
            entry, training=dataclasses.replace(entry.training, threads=entry.training.threads + 1)
        ),
    ]
    assert len({entry.config_hash(), *(e.config_hash() for e in changed)}) == 4
    assert SMOKE_ENTRIES["zoo-cnn"].config_hash() != entry.config_hash()


def test_cache_folder_is_keyed_by_name_and_hash_under_saebench_cache(zoo_cache, monkeypatch):
    entry = ENTRIES["zoo-vit"]
    assert entry.folder() == zoo_cache / "zoo" / f"zoo-vit-{entry.config_hash()}"
    monkeypatch.delenv("SAEBENCH_CACHE")
    assert cache_root().parts[-2:] == (".cache", "saebench")


def test_saved_model_round_trips_and_ensure_trained_does_not_retrain(zoo_cache, tiny_entries, monkeypatch):
    entry = tiny_entries["zoo-cnn"]
    assert load_trained(entry) is None
    folder = save_trained(_fake_trained(entry))
    assert sorted(p.name for p in folder.iterdir()) == ["record.json", "weights.safetensors"]
    assert sorted(p.name for p in folder.parent.iterdir()) == [folder.name]  # no staging folder left behind

    def no_training(*args, **kwargs):
        raise AssertionError("ensure_trained retrained a cached model")

    monkeypatch.setattr(registry, "train_entry", no_training)
    loaded = ensure_trained(entry)
    expected = _fake_trained(entry).model.state_dict()
    assert all(torch.equal(loaded.model.state_dict()[k], v) for k, v in expected.items())
    assert json.loads((folder / "record.json").read_text()) == loaded.record


def test_pretrained_zoo_backbone_needs_training_first_and_says_how(zoo_cache):
    with pytest.raises(WeightsNotFoundError, match=r"not trained yet.*`saebench zoo train zoo-cnn`"):
        load_backbone("zoo-cnn", pretrained=True)


def test_pretrained_zoo_backbone_loads_the_cached_weights(zoo_cache):
    trained = _fake_trained(ENTRIES["zoo-mlp"], seed=3)
    save_trained(trained)
    backbone = load_backbone("zoo-mlp", pretrained=True)
    assert all(torch.equal(backbone.model.state_dict()[k], v) for k, v in trained.model.state_dict().items())
    # the registry path and the direct path give the same fingerprint, hence the same store hashes
    assert backbone.fingerprint() == backbone_of(trained).fingerprint()
    assert backbone.fingerprint()["source"]["config_hash"] == ENTRIES["zoo-mlp"].config_hash()
    assert "file_sha256" in backbone.fingerprint()["weights"]


def test_a_different_cached_model_changes_the_fingerprint(zoo_cache):
    save_trained(_fake_trained(ENTRIES["zoo-mlp"], seed=3))
    first = load_backbone("zoo-mlp", pretrained=True).fingerprint()
    save_trained(_fake_trained(ENTRIES["zoo-mlp"], seed=4))
    assert load_backbone("zoo-mlp", pretrained=True).fingerprint()["weights"] != first["weights"]


def test_unknown_entry_lists_valid_names():
    with pytest.raises(
        KeyError, match="unknown zoo model 'zoo-resnet'; valid: zoo-cnn, zoo-vit, zoo-mlp, zoo-clip"
    ):
        get_entry("zoo-resnet")


def test_smoke_entries_train_briefly_on_few_images():
    for name, smoke in SMOKE_ENTRIES.items():
        assert smoke.model == ENTRIES[name].model
        assert (smoke.training.epochs, smoke.training.train_images) == (1, 2000)


def test_bad_entries_are_refused():
    with pytest.raises(ValueError, match="unknown objective 'regress'"):
        dataclasses.replace(ENTRIES["zoo-cnn"], objective="regress")
    with pytest.raises(ValueError, match="the clip objective trains a ViTConfig image tower"):
        dataclasses.replace(ENTRIES["zoo-cnn"], objective="clip")
