"""Linear-probe agreement and KL (msae.md §2.7), by hand, and the probe trainer on separable data."""

from __future__ import annotations

import math

import pytest
import torch

from saebench.metrics.probe_agreement import (
    ProbeTraining,
    macro_f1,
    probe_agreement,
    probe_inputs,
    probe_kl,
    train_linear_probe,
)


def test_probe_kl_by_hand():
    # row 0: p = softmax(0, log 3) = (1/4, 3/4), q = (1/2, 1/2):
    #   KL = 1/4 log(1/2) + 3/4 log(3/2); row 1 identical logits: 0.
    orig = torch.tensor([[0.0, math.log(3.0)], [1.0, 2.0]])
    recon = torch.tensor([[0.0, 0.0], [1.0, 2.0]])
    kl0 = 0.25 * math.log(0.5) + 0.75 * math.log(1.5)
    mean, std = probe_kl(orig, recon)
    assert mean == pytest.approx(kl0 / 2)
    assert std == pytest.approx(kl0 / math.sqrt(2))  # unbiased std of (kl0, 0)


def test_probe_agreement_is_argmax_agreement_in_percent():
    orig = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 1.0], [0.0, 3.0]])
    recon = torch.tensor([[0.9, 0.1], [1.0, 0.0], [5.0, 1.0], [0.0, 1.0]])  # row 1 flips: 3 of 4 agree
    assert probe_agreement(orig, recon) == pytest.approx(75.0)


def test_probe_inputs_are_unit_rows():
    x = torch.tensor([[3.0, 4.0]])
    assert torch.allclose(probe_inputs(x), torch.tensor([[0.6, 0.8]]))  # 3-4-5 triangle; float32 output
    with pytest.raises(ValueError, match="all-zero row"):
        probe_inputs(torch.zeros(1, 2))


def test_macro_f1_by_hand():
    # labels (0, 0, 1, 2), predicted (0, 1, 1, 1): class 0 TP 1 FN 1 -> 2/3; class 1 TP 1 FP 2 -> 2/4;
    # class 2 TP 0 FN 1 -> 0. Mean (2/3 + 1/2 + 0) / 3 = 7/18.
    assert macro_f1(torch.tensor([0, 0, 1, 2]), torch.tensor([0, 1, 1, 1])) == pytest.approx(7 / 18)


def test_shapes_must_match():
    with pytest.raises(ValueError, match="shape"):
        probe_kl(torch.zeros(2, 3), torch.zeros(2, 4))


def test_trained_probe_separates_separable_classes():
    torch.manual_seed(0)
    centres = torch.eye(3) * 4
    labels = torch.arange(3).repeat(40)
    x = probe_inputs(centres[labels] + torch.randn(120, 3) * 0.3)
    probe = train_linear_probe(x, labels, x, labels, 3, ProbeTraining(epochs=20, batch_size=60, lr=0.05))
    with torch.no_grad():
        accuracy = (probe(x).argmax(1) == labels).float().mean().item()
    assert accuracy > 0.95  # the classes are 4 / 0.3 ~ 13 noise stds apart
