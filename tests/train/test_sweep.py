"""Sweeps: one pass over the data trains every SAE exactly as training it alone would."""

from __future__ import annotations

import json

import pytest

from saebench.train import TrainConfig, train_sae, train_sweep
from saebench.train.checkpoint import list_checkpoints
from saebench.train.losses import mse_loss, relu_l1_loss


class CountingBatches:
    """Wraps a list of batches and counts how many times it is iterated and how many batches it yields."""

    def __init__(self, batches):
        self.batches, self.passes, self.drawn = list(batches), 0, 0

    def __iter__(self):
        self.passes += 1
        for batch in self.batches:
            self.drawn += 1
            yield batch


def test_sweep_members_match_solo_runs(sae_factory, batches, same_state, tmp_path):
    members = {
        "k2": (lambda: sae_factory("topk", k=2), mse_loss, 8),
        "k8x2": (lambda: sae_factory("topk", k=8, n_latents=128), mse_loss, 8),
        "l1": (lambda: sae_factory("relu"), relu_l1_loss(0.05), 5),  # fewer steps than the others
    }
    shared = TrainConfig(total_steps=8, lr=2e-3, warmup_steps=2, schedule="cosine", progress=False)
    configs = {
        name: TrainConfig(**{**shared.to_dict(), "total_steps": steps})
        for name, (_, _, steps) in members.items()
    }
    data = CountingBatches(batches(8))
    results = train_sweep(
        {name: make() for name, (make, _, _) in members.items()},
        data,
        configs,
        loss_fns={name: loss for name, (_, loss, _) in members.items()},
    )
    assert (data.passes, data.drawn) == (1, 8)  # each batch drawn once for all three SAEs
    for name, (make, loss, steps) in members.items():
        solo = train_sae(make(), batches(8), configs[name], loss_fn=loss)
        assert results[name].steps == steps
        same_state(results[name].sae, solo.sae)


def test_shared_config_splits_checkpoints_and_logs_per_member(sae_factory, batches, tmp_path):
    config = TrainConfig(
        total_steps=4,
        checkpoint_every=2,
        checkpoint_dir=str(tmp_path / "ckpt"),
        log_path=str(tmp_path / "train.jsonl"),
        progress=False,
    )
    saes = {"k2": sae_factory("topk", k=2), "k4": sae_factory("topk", k=4)}
    train_sweep(saes, batches(4), config, loss_fns=mse_loss)
    for name in saes:
        assert [s for s, _ in list_checkpoints(tmp_path / "ckpt" / name)] == [2, 4]
        lines = (tmp_path / f"train.{name}.jsonl").read_text().splitlines()
        assert [json.loads(line)["step"] for line in lines] == [1, 2, 3, 4]


def test_resumed_sweep_catches_up_a_member_that_fell_behind(sae_factory, batches, same_state, tmp_path):
    def run(folder, data, resume=False):
        configs = {
            "a": TrainConfig(
                total_steps=8, checkpoint_every=2, checkpoint_dir=str(folder / "a"), resume=resume
            ),
            "b": TrainConfig(
                total_steps=8, checkpoint_every=4, checkpoint_dir=str(folder / "b"), resume=resume
            ),
        }
        configs = {k: TrainConfig(**{**c.to_dict(), "progress": False}) for k, c in configs.items()}
        saes = {"a": sae_factory("topk", k=2), "b": sae_factory("topk", k=4)}
        return train_sweep(saes, data, configs, loss_fns=mse_loss)

    reference = run(tmp_path / "ref", batches(8))

    def crashing():
        for index, batch in enumerate(batches(8)):
            if index == 6:
                raise RuntimeError("simulated crash")
            yield batch

    with pytest.raises(RuntimeError, match="simulated crash"):
        run(tmp_path / "run", crashing())
    # member a checkpointed step 6, member b only step 4: the data restarts at 4 and a skips two batches
    resumed = run(tmp_path / "run", batches(8), resume=True)
    for name in ("a", "b"):
        assert resumed[name].steps == 8
        same_state(resumed[name].sae, reference[name].sae)


def test_sweep_rejects_bad_members(sae_factory, batches, tmp_path):
    config = TrainConfig(total_steps=1, progress=False)
    with pytest.raises(ValueError, match="missing \\['b'\\]"):
        train_sweep({"a": sae_factory(), "b": sae_factory()}, batches(1), {"a": config}, loss_fns=mse_loss)
    with pytest.raises(ValueError, match="name files"):
        train_sweep({"../x": sae_factory()}, batches(1), config, loss_fns=mse_loss)
    shared_dir = TrainConfig(total_steps=1, checkpoint_dir=str(tmp_path), progress=False)
    with pytest.raises(ValueError, match="must not share a checkpoint_dir"):
        train_sweep({"a": sae_factory(), "b": sae_factory()}, batches(1), {"a": shared_dir, "b": shared_dir})
