"""The Shapes autoencoders' cache: a second run reads the weights instead of training, any change to the spec
trains a new entry, and a damaged entry is an error that names its folder."""

from __future__ import annotations

import pytest
import torch

from saebench.data.shapes import ShapesConfig, ShapesWorld

from . import ae_cache
from .ae_cache import spec_folder, trained_autoencoder

AE = {"latent_dim": 8, "epochs": 1, "lr": 0.001}
CPU = torch.device("cpu")


@pytest.fixture()
def world(tmp_path, monkeypatch) -> ShapesWorld:
    monkeypatch.setenv("SAEBENCH_CACHE", str(tmp_path / "cache"))
    return ShapesWorld(ShapesConfig(image_size=12, n_samples=16, radii=(2, 3), seed=0))


def test_second_call_reads_the_cache(world, monkeypatch):
    first, mse = trained_autoencoder("mlp", world.config, world.images, AE, 0, CPU)
    entries = list((ae_cache.cache_root() / "shapes-ae").iterdir())
    assert [e.name.startswith("mlp-") for e in entries] == [True]
    assert sorted(p.name for p in entries[0].iterdir()) == ["record.json", "weights.safetensors"]

    def no_training(*args, **kwargs):
        raise AssertionError("a cached autoencoder was trained again")

    monkeypatch.setattr(ae_cache, "train_autoencoder", no_training)
    again, mse_again = trained_autoencoder("mlp", world.config, world.images, AE, 0, CPU)
    assert mse_again == mse
    for a, b in zip(first.state_dict().values(), again.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_spec_changes_give_new_entries(world):
    base = ae_cache.autoencoder_spec("mlp", world.config, AE, 0, CPU)
    changed = [
        ae_cache.autoencoder_spec("cnn", world.config, AE, 0, CPU),
        ae_cache.autoencoder_spec("mlp", world.config, {**AE, "epochs": 2}, 0, CPU),
        ae_cache.autoencoder_spec("mlp", world.config, AE, 1, CPU),
        ae_cache.autoencoder_spec("mlp", ShapesConfig(image_size=12, n_samples=17, radii=(2, 3)), AE, 0, CPU),
    ]
    folders = {spec_folder(spec) for spec in [base, *changed]}
    assert len(folders) == 5


def test_without_cache_nothing_is_written(world):
    trained_autoencoder("mlp", world.config, world.images, AE, 0, CPU, cache=False)
    assert not (ae_cache.cache_root() / "shapes-ae").exists()


def test_damaged_entry_names_its_folder(world):
    trained_autoencoder("mlp", world.config, world.images, AE, 0, CPU)
    folder = spec_folder(ae_cache.autoencoder_spec("mlp", world.config, AE, 0, CPU))
    weights = folder / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(RuntimeError, match=f"{folder}.*delete that folder"):
        trained_autoencoder("mlp", world.config, world.images, AE, 0, CPU)
