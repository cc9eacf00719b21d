"""Exact resume: a run killed at step N and resumed ends bitwise equal to an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from saebench.sae import load_sae
from saebench.train import TrainConfig, train_sae
from saebench.train.checkpoint import latest_checkpoint, list_checkpoints, read_trainer_state
from saebench.train.losses import mse_loss

HERE = Path(__file__).parent


class Crash(RuntimeError):
    """Raised from inside the batch iterable to simulate a run dying mid-training."""


def crash_after(batches, n_ok: int):
    for index, batch in enumerate(batches):
        if index == n_ok:
            raise Crash(f"simulated crash while drawing batch {index + 1}")
        yield batch


def config_in(folder: Path, **overrides) -> TrainConfig:
    fields = dict(
        total_steps=20,
        lr=2e-3,
        warmup_steps=3,
        schedule="cosine",
        min_lr_ratio=0.1,
        grad_clip=0.5,
        b_dec_init="mean",
        auxk_coefficient=1 / 32,
        dead_window_tokens=64,
        checkpoint_every=4,
        checkpoint_dir=str(folder / "ckpt"),
        log_path=str(folder / "log.jsonl"),
        seed=3,
        progress=False,
    )
    return TrainConfig(**{**fields, **overrides})


def log_without_times(path: Path) -> list[dict]:
    records = [json.loads(line) for line in path.read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "time_s"} for r in records]


def stochastic_mse(x, out, sae):
    """MSE times a random factor from the global RNG: a stand-in for losses that sample (e.g. Matryoshka
    prefixes). Training then consumes RNG draws that replaying the data cannot reproduce, so an exact resume
    must restore the saved RNG state."""
    loss, logs = mse_loss(x, out, sae)
    return loss * (1 + 0.1 * torch.rand(())), logs


def test_crash_then_resume_is_bitwise_identical(sae_factory, rng_batches, same_state, tmp_path):
    reference = train_sae(sae_factory(), rng_batches(20), config_in(tmp_path / "ref"), loss_fn=stochastic_mse)

    run = tmp_path / "run"
    with pytest.raises(Crash):
        train_sae(sae_factory(), crash_after(rng_batches(20), 14), config_in(run), loss_fn=stochastic_mse)
    assert latest_checkpoint(run / "ckpt").name == "step_00000012"
    assert len((run / "log.jsonl").read_text().splitlines()) == 14  # steps 13, 14 will be redone

    # a differently initialised SAE: every weight must come from the checkpoint
    resumed = train_sae(
        sae_factory(seed=99), rng_batches(20), config_in(run, resume=True), loss_fn=stochastic_mse
    )
    assert resumed.steps == 20 and [r["step"] for r in resumed.history] == list(range(13, 21))
    same_state(resumed.sae, reference.sae)
    assert log_without_times(run / "log.jsonl") == log_without_times(tmp_path / "ref" / "log.jsonl")
    final_ref = read_trainer_state(latest_checkpoint(tmp_path / "ref" / "ckpt"))
    final_run = read_trainer_state(latest_checkpoint(run / "ckpt"))
    assert torch.equal(
        final_ref["dead_tracker"]["tokens_since_fired"], final_run["dead_tracker"]["tokens_since_fired"]
    )
    assert final_ref["optimizer"]["state"][0]["step"] == final_run["optimizer"]["state"][0]["step"] == 20


def test_shuffling_dataloader_resumes_exactly(sae_factory, batches, same_state, tmp_path):
    rows = torch.cat(list(batches(10)))

    def loader():  # the shuffle order comes from the global RNG when iter() is called
        return torch.utils.data.DataLoader(rows, batch_size=16, shuffle=True)

    reference = train_sae(sae_factory(), loader(), config_in(tmp_path / "ref"), loss_fn=mse_loss)
    torch.manual_seed(1234)  # the RNG state before the call must not matter
    with pytest.raises(Crash):
        train_sae(sae_factory(), crash_after(loader(), 10), config_in(tmp_path / "run"), loss_fn=mse_loss)
    resumed = train_sae(sae_factory(), loader(), config_in(tmp_path / "run", resume=True), loss_fn=mse_loss)
    same_state(resumed.sae, reference.sae)


class CountingStream:
    """A re-iterable batch source with ``state_dict()`` / ``load_state_dict()``: resuming must use them
    instead of replaying the consumed batches. ``drawn`` counts the batches actually produced; ``crash_at``
    raises :class:`Crash` when that (0-based) batch is requested."""

    def __init__(self, batches: list[torch.Tensor], crash_at: int | None = None):
        self.batches, self.position, self.drawn, self.crash_at = batches, 0, 0, crash_at

    def __iter__(self):
        while self.position < len(self.batches):
            if self.position == self.crash_at:
                raise Crash(f"simulated crash while drawing batch {self.position + 1}")
            self.position += 1
            self.drawn += 1
            yield self.batches[self.position - 1]

    def state_dict(self) -> dict:
        return {"position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.position = state["position"]


def test_stateful_iterable_resumes_without_replaying(sae_factory, batches, same_state, tmp_path):
    data = list(batches(20))
    reference = train_sae(sae_factory(), CountingStream(data), config_in(tmp_path / "ref"), loss_fn=mse_loss)
    with pytest.raises(Crash):
        train_sae(
            sae_factory(),
            CountingStream(data, crash_at=10),
            config_in(tmp_path / "run"),
            loss_fn=mse_loss,
        )
    stream = CountingStream(data)
    resumed = train_sae(
        sae_factory(seed=5), stream, config_in(tmp_path / "run", resume=True), loss_fn=mse_loss
    )
    assert stream.drawn == 20 - 8  # restarted at the checkpoint of step 8, nothing replayed
    same_state(resumed.sae, reference.sae)


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_is_bitwise_identical(helper, same_state, tmp_path):
    worker = helper("kill_worker")
    ckpt, log = tmp_path / "ckpt", tmp_path / "log.jsonl"
    script = [
        sys.executable,
        str(HERE / "kill_worker.py"),
        str(ckpt),
        str(log),
        str(tmp_path / "final_if_finished"),
        "0.05",
    ]
    victim = subprocess.Popen(script, env={**os.environ, "OMP_NUM_THREADS": "1"}, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 90
    while not list_checkpoints(ckpt) or list_checkpoints(ckpt)[-1][0] < 5:
        assert victim.poll() is None, victim.stderr.read().decode()
        assert time.monotonic() < deadline, "the worker wrote no checkpoint in time"
        time.sleep(0.01)
    victim.send_signal(signal.SIGKILL)  # lands anywhere: mid-step, mid-log-line or mid-checkpoint-write
    assert victim.wait() == -signal.SIGKILL
    assert list_checkpoints(ckpt)[-1][0] < worker.TOTAL_STEPS  # really killed before the end

    sae, stream, config = worker.make_run(str(ckpt), str(log))  # the run's config has resume=True
    resumed = train_sae(sae, stream, config, loss_fn=mse_loss)
    assert not [p for p in ckpt.iterdir() if p.name.startswith(".tmp")]
    sae, stream, config = worker.make_run(str(tmp_path / "ref_ckpt"), str(tmp_path / "ref.jsonl"))
    reference = train_sae(sae, stream, config, loss_fn=mse_loss)
    same_state(resumed.sae, reference.sae)
    assert [r["step"] for r in map(json.loads, log.read_text().splitlines())] == list(range(1, 31))


# ----------------------------------------------------------------------- checkpoint files
def test_checkpoints_are_pruned_and_load_as_saes(sae_factory, batches, same_state, tmp_path):
    config = config_in(tmp_path, total_steps=10, checkpoint_every=2, keep_checkpoints=2)
    result = train_sae(sae_factory(), batches(10), config, loss_fn=mse_loss)
    assert [step for step, _ in list_checkpoints(tmp_path / "ckpt")] == [8, 10]
    same_state(load_sae(latest_checkpoint(tmp_path / "ckpt") / "sae"), result.sae)


def test_half_written_checkpoint_is_ignored_and_cleaned(sae_factory, batches, tmp_path):
    config = config_in(tmp_path, total_steps=4, checkpoint_every=2)
    train_sae(sae_factory(), batches(4), config, loss_fn=mse_loss)
    stale = tmp_path / "ckpt" / ".tmp-step_00000006-12345"
    stale.mkdir()
    (stale / "sae.safetensors").write_bytes(b"truncated")
    assert latest_checkpoint(tmp_path / "ckpt").name == "step_00000004"
    resumed = config_in(tmp_path, total_steps=6, checkpoint_every=2, resume=True)
    with pytest.raises(ValueError, match="total_steps"):  # a changed schedule length is not an exact resume
        train_sae(sae_factory(), batches(6), resumed, loss_fn=mse_loss)
    assert not stale.exists()


def test_fresh_run_refuses_a_folder_with_checkpoints(sae_factory, batches, tmp_path):
    train_sae(sae_factory(), batches(4), config_in(tmp_path, total_steps=4), loss_fn=mse_loss)
    with pytest.raises(FileExistsError, match="set resume=True"):
        train_sae(sae_factory(), batches(4), config_in(tmp_path, total_steps=4), loss_fn=mse_loss)


def test_resume_with_changed_options_is_refused(sae_factory, batches, tmp_path):
    train_sae(sae_factory(), batches(4), config_in(tmp_path, total_steps=4), loss_fn=mse_loss)
    changed = config_in(tmp_path, total_steps=4, lr=1e-2, resume=True)
    with pytest.raises(ValueError, match=r"'lr': \(0.002, 0.01\)"):
        train_sae(sae_factory(), batches(4), changed, loss_fn=mse_loss)


def test_resume_into_another_architecture_is_refused(sae_factory, batches, tmp_path):
    train_sae(sae_factory("topk"), batches(4), config_in(tmp_path, total_steps=4), loss_fn=mse_loss)
    with pytest.raises(ValueError, match="holds a 'topk' SAE"):
        train_sae(
            sae_factory("relu"), batches(4), config_in(tmp_path, total_steps=4, resume=True), loss_fn=mse_loss
        )


def test_resume_with_too_little_data_is_refused(sae_factory, batches, tmp_path):
    with pytest.raises(Crash):
        train_sae(sae_factory(), crash_after(batches(20), 9), config_in(tmp_path), loss_fn=mse_loss)
    with pytest.raises(ValueError, match="ran out after 5 of the 8 consumed"):
        train_sae(sae_factory(), batches(5), config_in(tmp_path, resume=True), loss_fn=mse_loss)


def test_resume_without_a_checkpoint_starts_fresh(sae_factory, batches, same_state, tmp_path):
    plain = train_sae(sae_factory(), batches(4), config_in(tmp_path / "a", total_steps=4), loss_fn=mse_loss)
    fresh = train_sae(
        sae_factory(), batches(4), config_in(tmp_path / "b", total_steps=4, resume=True), loss_fn=mse_loss
    )
    same_state(plain.sae, fresh.sae)
