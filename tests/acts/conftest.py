"""Fixtures shared by the backbone, token and source tests: a tiny random timm ViT and generated images."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from saebench.acts.backbones import Backbone, load_backbone

TINY_VIT = "timm:vit_tiny_patch16_224"
# 32 px images in 16 px patches: a 2x2 grid; 2 blocks; 2 register tokens after the class token
TINY_VIT_KWARGS = {"img_size": 32, "depth": 2, "reg_tokens": 2}


def _load_tiny_vit(**kwargs) -> Backbone:
    return load_backbone(TINY_VIT, model_kwargs=TINY_VIT_KWARGS, **kwargs)


@pytest.fixture(scope="module")
def load_tiny_vit():
    """``load_tiny_vit(**load_backbone_kwargs)``: timm ViT-Tiny cut down to 2 blocks on 32x32 images."""
    return _load_tiny_vit


@pytest.fixture(scope="module")
def tiny_vit() -> Backbone:
    """The tiny ViT with random weights, seed 0."""
    return _load_tiny_vit(seed=0)


@pytest.fixture
def tiny_images() -> torch.Tensor:
    """(3, 3, 32, 32) normalised-looking float images, fixed by seed."""
    return torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))


@pytest.fixture
def rgb_arrays() -> np.ndarray:
    """(6, 20, 24, 3) uint8 random RGB images, fixed by seed."""
    return np.random.default_rng(0).integers(0, 256, size=(6, 20, 24, 3), dtype=np.uint8)
