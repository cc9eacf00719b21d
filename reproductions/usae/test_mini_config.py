"""The mini tier's criterion (NOTES.md, "Why EfficientNet's decoder learned nothing"): on features that sit at
one level on most tokens, as EfficientNet-Lite0's post-ReLU6 map does (90 % zeros), the authors' L1 criterion
is lowest at that level (the median) and the squared-error option at the mean."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from saebench.repro.yamlfile import load_yaml
from saebench.train.universal import LOSSES, UniversalTrainConfig

MINI = Path(__file__).parent / "configs" / "mini.yaml"


def _criterion_at_constant(loss: str, x: torch.Tensor, level: float) -> float:
    """The criterion of predicting ``level`` everywhere, with no unchosen pre-activations (aux = residual)."""
    codes = torch.zeros(x.shape[0], 4)
    dictionary = torch.eye(4, x.shape[1])
    return LOSSES[loss](x, torch.full_like(x, level), codes, codes, dictionary).item()


def test_l1_prefers_the_median_of_sparse_features_and_l2_the_mean():
    # 9 of 10 entries are 0 and one is 1: median 0, mean 0.1. With aux = residual the loss is 1.1 x mean|r|^p.
    x = torch.tensor([[0.0] * 9 + [1.0]]).T.repeat(1, 3)
    # L1: at 0 -> 1.1 x 0.1 = 0.11; at 0.1 -> 1.1 x (0.9 x 0.1 + 0.1 x 0.9) = 0.198
    assert _criterion_at_constant("l1_aux", x, 0.0) == pytest.approx(0.11)
    assert _criterion_at_constant("l1_aux", x, 0.1) == pytest.approx(0.198)
    # L2: at 0 -> 1.1 x 0.1 = 0.11; at 0.1 -> 1.1 x (0.9 x 0.01 + 0.1 x 0.81) = 0.099
    assert _criterion_at_constant("l2_aux", x, 0.0) == pytest.approx(0.11)
    assert _criterion_at_constant("l2_aux", x, 0.1) == pytest.approx(0.099)


def test_mini_config_trains_with_the_squared_error_criterion():
    train = UniversalTrainConfig(**load_yaml(MINI)["train"])
    assert train.variant == "code"
    assert train.criterion is LOSSES["l2_aux"]
