"""saebench.zoo: small models trained here on Fashion-MNIST for the mini tier, and the CLIP-like pair.

- :mod:`~saebench.zoo.models`: the CNN (7×7 last map), the ViT (4×4 patches, CLS, residual stream), the MLP;
- :mod:`~saebench.zoo.train`: deterministic training and accuracy;
- :mod:`~saebench.zoo.text` and :mod:`~saebench.zoo.clip_pair`: the frozen MiniLM text tower and the image
  tower aligned to it;
- :mod:`~saebench.zoo.registry`: the entries, their cache (``$SAEBENCH_CACHE/zoo``) and their registration as
  backbones (``load_backbone("zoo-cnn", pretrained=True)``);
- :mod:`~saebench.zoo.mini_caches`: one call that caches every mini-tier activation store.

Importing this package registers the zoo backbones. See ``docs/zoo.md`` and ``docs/mini-tier.md``.
"""

from saebench.zoo.clip_pair import ClipPair
from saebench.zoo.data import ZOO_PREPROCESSING, load_fashion_mnist
from saebench.zoo.models import CNNConfig, MLPConfig, ViTConfig, ZooCNN, ZooMLP, ZooViT, build_model
from saebench.zoo.registry import (
    ENTRIES,
    SMOKE_ENTRIES,
    TrainedModel,
    ZooEntry,
    cache_root,
    ensure_trained,
    get_entry,
    load_trained,
    train_entry,
    zoo_backbone,
)
from saebench.zoo.text import FrozenTextEncoder, text_encoder
from saebench.zoo.train import TrainSettings

__all__ = [
    "ENTRIES",
    "SMOKE_ENTRIES",
    "ZOO_PREPROCESSING",
    "CNNConfig",
    "ClipPair",
    "FrozenTextEncoder",
    "MLPConfig",
    "TrainSettings",
    "TrainedModel",
    "ViTConfig",
    "ZooCNN",
    "ZooEntry",
    "ZooMLP",
    "ZooViT",
    "build_model",
    "cache_root",
    "ensure_trained",
    "get_entry",
    "load_fashion_mnist",
    "load_trained",
    "text_encoder",
    "train_entry",
    "zoo_backbone",
]
