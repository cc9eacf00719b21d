"""TrainConfig: validation with clear errors, and the plain-data round trip."""

from __future__ import annotations

import pytest

from saebench.train import TrainConfig


def test_round_trip_through_plain_data():
    config = TrainConfig(
        total_steps=10, betas=(0.8, 0.99), checkpoint_dir="ck", checkpoint_every=5, amp_dtype="bf16"
    )
    data = config.to_dict()
    assert data["betas"] == [0.8, 0.99]
    assert TrainConfig.from_dict(data) == config


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"total_steps": 0}, "total_steps must be >= 1"),
        ({"total_steps": 2.5}, "total_steps must be an int"),
        ({"optimizer": "sgd"}, "choose one of ('adam', 'adamw')"),
        ({"schedule": "linear"}, "choose one of ('constant', 'cosine', 'linear_decay')"),
        ({"amp_dtype": "float16"}, "choose one of (None, 'bf16', 'fp16')"),
        ({"b_dec_init": "median"}, "geometric_median"),
        ({"lr": 0.0}, "lr must be > 0"),
        ({"betas": (0.9, 1.0)}, "betas must be two numbers in [0, 1)"),
        ({"min_lr_ratio": 1.5}, "min_lr_ratio must be in [0, 1]"),
        ({"warmup_steps": 11}, "warmup_steps (11) exceeds total_steps (10)"),
        ({"grad_clip": 0.0}, "grad_clip must be > 0"),
        ({"auxk_coefficient": -1.0}, "auxk_coefficient must be >= 0"),
        ({"checkpoint_every": 5}, "need checkpoint_dir"),
        ({"resume": True}, "need checkpoint_dir"),
        ({"dead_window_tokens": 0}, "dead_window_tokens must be >= 1"),
    ],
)
def test_bad_fields_are_named(fields, message):
    with pytest.raises((ValueError, TypeError)) as error:
        TrainConfig(**{"total_steps": 10, **fields})
    assert message in str(error.value)


def test_unknown_keys_list_the_valid_ones():
    with pytest.raises(ValueError, match="unknown TrainConfig field.*learning_rate.*valid fields"):
        TrainConfig.from_dict({"total_steps": 3, "learning_rate": 1e-3})


def test_bookkeeping_changes_do_not_count_as_training_changes():
    base = TrainConfig(total_steps=10, checkpoint_dir="a", checkpoint_every=2)
    moved = TrainConfig(
        total_steps=10, checkpoint_dir="b", checkpoint_every=5, log_path="x.jsonl", progress=False
    )
    assert base.differences_affecting_training(moved) == {}
    assert base.differences_affecting_training(TrainConfig(total_steps=10, lr=1e-3)) == {"lr": (3e-4, 1e-3)}
