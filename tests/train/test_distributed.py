"""Data parallelism: deterministic batch sharding, and torchrun with 2 processes (gloo, CPU) reaching the same
weights as 1 process on the same global batches."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from saebench.sae import load_sae
from saebench.train import train_sae
from saebench.train.distributed import current_context, shard_batch, shard_bounds
from saebench.train.losses import mse_loss

HERE = Path(__file__).parent


def test_shards_cover_the_batch_once_in_order():
    for n_rows, world in [(31, 2), (10, 3), (8, 4), (5, 5)]:
        bounds = [shard_bounds(n_rows, r, world) for r in range(world)]
        assert bounds[0][0] == 0 and bounds[-1][1] == n_rows
        assert all(stop == start for (_, stop), (start, _) in zip(bounds, bounds[1:], strict=False))
        sizes = [stop - start for start, stop in bounds]
        assert max(sizes) - min(sizes) <= 1
    assert [shard_bounds(31, r, 2) for r in range(2)] == [(0, 16), (16, 31)]


def test_dict_batches_are_sharded_per_key():
    batch = {"a": torch.arange(10).reshape(5, 2), "b": torch.arange(5)}
    shard = shard_batch(batch, rank=1, world_size=2)
    assert torch.equal(shard["a"], batch["a"][3:]) and torch.equal(shard["b"], batch["b"][3:])
    with pytest.raises(ValueError, match="same number of rows"):
        shard_batch({"a": torch.zeros(4, 2), "b": torch.zeros(3)}, 0, 2)
    with pytest.raises(ValueError, match="cannot be split over 4 ranks"):
        shard_batch(torch.zeros(3, 2), 0, 4)


def test_torchrun_environment_without_a_process_group_is_an_error(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(RuntimeError, match="init_from_env"):
        current_context()


@pytest.mark.slow
@pytest.mark.distributed
def test_two_processes_match_one_process(helper, tmp_path):
    worker = helper("ddp_worker")
    out = tmp_path / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [*command, str(HERE / "ddp_worker.py"), str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    ranks = json.loads((out / "ranks.json").read_text())
    assert ranks == {"world_size": 2, "max_rank_diff": 0.0}  # ranks apply identical reduced updates

    sae, batches, config = worker.make_run(tmp_path / "single")
    single = train_sae(sae, batches, config, loss_fn=mse_loss)
    parallel = load_sae(out / "final")
    for name, value in single.sae.state_dict().items():
        # same math, different summation order (two half-batch means vs one mean): float32 rounding only,
        # measured at <= 6e-8 after 12 steps; 1e-6 leaves room for other BLAS kernels
        torch.testing.assert_close(parallel.state_dict()[name], value, rtol=1e-5, atol=1e-6, msg=name)

    log_parallel = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log_parallel] == list(range(1, worker.TOTAL_STEPS + 1))  # rank 0 alone wrote
    for mine, theirs in zip(log_parallel, single.history, strict=True):
        assert mine["tokens"] == theirs["tokens"]  # token counts summed over ranks
        assert mine["dead_fraction"] == theirs["dead_fraction"]  # firing statistics all-reduced exactly
        assert mine["l0"] == pytest.approx(theirs["l0"], rel=1e-12)
        assert mine["loss"] == pytest.approx(theirs["loss"], rel=1e-4)  # row-weighted mean over ranks
    assert sorted(p.name for p in (out / "ckpt").iterdir()) == ["step_00000006", "step_00000012"]
