"""Zoo test fixtures: a private cache folder, tiny zoo entries, a skip when Fashion-MNIST is absent."""

from __future__ import annotations

import pytest

from saebench.acts.sources import FashionMNISTSource
from saebench.zoo import CNNConfig, MLPConfig, TrainSettings, ViTConfig, ZooEntry

# Tiny but shaped like the real entries: 28x28 inputs, 7x7 grids; trained for one epoch on 256 images.
TINY_TRAINING = TrainSettings(epochs=1, batch_size=64, lr=3e-3, train_images=256, test_images=200)
TINY_ENTRIES = {
    "zoo-cnn": ZooEntry("tiny-cnn", CNNConfig(channels=(4, 8, 8), convs_per_stage=1), TINY_TRAINING),
    "zoo-vit": ZooEntry("tiny-vit", ViTConfig(width=16, depth=2, heads=2), TINY_TRAINING),
    "zoo-mlp": ZooEntry("tiny-mlp", MLPConfig(hidden=(32, 16)), TINY_TRAINING),
    "zoo-clip": ZooEntry(
        "tiny-clip",
        ViTConfig(width=16, depth=1, heads=2, n_outputs=384),
        TrainSettings(epochs=3, batch_size=64, lr=1e-2, train_images=2048, test_images=200),
        objective="clip",
    ),
}


@pytest.fixture(scope="session")
def fashion_mnist() -> None:
    """Skips the test when the Fashion-MNIST files are not installed."""
    try:
        FashionMNISTSource("test")
    except FileNotFoundError:
        pytest.skip("Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")


@pytest.fixture
def zoo_cache(tmp_path, monkeypatch):
    """A fresh ``$SAEBENCH_CACHE`` for the test."""
    monkeypatch.setenv("SAEBENCH_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="session")
def tiny_entries() -> dict[str, ZooEntry]:
    return dict(TINY_ENTRIES)
