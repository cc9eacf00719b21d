"""Learning-rate schedules: warm-up, constant, cosine end value, and the lr the trainer actually used."""

from __future__ import annotations

import math

import pytest
import torch

from saebench.train import TrainConfig, train_sae
from saebench.train.losses import mse_loss
from saebench.train.schedules import build_scheduler, lr_multiplier


def test_warmup_is_linear_from_one_over_w():
    # PatchSAE's LambdaLR min(1, (step + 1) / W): W=4 gives 1/4, 2/4, 3/4, then 1.
    values = [lr_multiplier(s, total_steps=10, warmup_steps=4) for s in range(6)]
    assert values == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]


def test_constant_schedule_without_warmup_is_one_everywhere():
    assert {lr_multiplier(s, total_steps=5) for s in range(8)} == {1.0}


def test_cosine_starts_at_one_halves_midway_and_ends_at_min_ratio():
    kwargs = {"total_steps": 12, "warmup_steps": 2, "schedule": "cosine", "min_lr_ratio": 0.1}
    assert lr_multiplier(2, **kwargs) == 1.0  # first step after warm-up: progress 0
    # midpoint of the 10 decay steps: 0.1 + 0.9 * (1 + cos(pi/2)) / 2 = 0.55
    assert lr_multiplier(7, **kwargs) == pytest.approx(0.55, abs=1e-12)
    assert lr_multiplier(12, **kwargs) == pytest.approx(0.1, abs=1e-12)  # after the last step
    assert lr_multiplier(50, **kwargs) == pytest.approx(0.1, abs=1e-12)  # and beyond
    decay = [lr_multiplier(s, **kwargs) for s in range(2, 13)]
    assert all(a > b for a, b in zip(decay, decay[1:], strict=False))


def test_linear_decay_is_msaes_linear_decay_lr_per_epoch():
    # the authors' LinearDecayLR over E = 10 epochs: 1 for epochs 0..7 (int(0.8 * 10) = 8), then
    # (10 - e) / (0.2 * 10): epoch 8 -> 2/2 = 1, epoch 9 -> 1/2 = 0.5; 0 after the last epoch
    values = [lr_multiplier(e, total_steps=10, schedule="linear_decay") for e in range(11)]
    assert values == [1.0] * 9 + [0.5, 0.0]


def test_unknown_schedule_lists_choices():
    with pytest.raises(ValueError, match="choose one of"):
        lr_multiplier(0, total_steps=3, schedule="step")


def test_scheduler_drives_optimizer_lr():
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=2.0)
    config = TrainConfig(total_steps=4, lr=2.0, warmup_steps=2, schedule="cosine")
    scheduler = build_scheduler(optimizer, config)
    seen = []
    for _ in range(5):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    # warm-up 2 * [1/2, 2/2]; cosine over T - W = 2 steps: progress 0, 1/2, 1 -> 2 * [1, (1 + cos(pi/2))/2, 0]
    assert seen == pytest.approx([1.0, 2.0, 2.0, 2.0 * (1 + math.cos(math.pi / 2)) / 2, 0.0], abs=1e-12)


def test_training_log_records_the_scheduled_lr(sae_factory, batches):
    config = TrainConfig(
        total_steps=6, lr=1e-3, warmup_steps=3, schedule="cosine", min_lr_ratio=0.5, progress=False
    )
    result = train_sae(sae_factory(), batches(6), config, loss_fn=mse_loss)
    expected = [
        1e-3 * lr_multiplier(s, total_steps=6, warmup_steps=3, schedule="cosine", min_lr_ratio=0.5)
        for s in range(6)
    ]
    assert [r["lr"] for r in result.history] == pytest.approx(expected, rel=1e-12)
