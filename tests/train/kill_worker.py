"""A training run that the resume tests interrupt: in-process (``make_run``) or as a subprocess to SIGKILL.

Usage: ``python kill_worker.py CHECKPOINT_DIR LOG_PATH OUT_PATH [DELAY_S]``. Trains ``make_run``'s SAE
(resuming from CHECKPOINT_DIR when it holds checkpoints) and saves the final SAE to OUT_PATH (``save_sae``).
DELAY_S slows every batch down so the parent has time to kill the run in the middle.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator

import torch

from saebench.sae import create_sae, save_sae
from saebench.train import TrainConfig, train_sae
from saebench.train.losses import mse_loss

TOTAL_STEPS = 30


def stream(n_batches: int, delay_s: float = 0.0) -> Iterator[torch.Tensor]:
    """(24, 16) batches drawn from torch's global RNG (so an exact resume must restore it)."""
    for _ in range(n_batches):
        if delay_s:
            time.sleep(delay_s)
        yield torch.randn(24, 16) * 1.5 - 0.3


def make_run(checkpoint_dir: str, log_path: str, delay_s: float = 0.0):
    """The SAE, batches and config of the run (same arguments -> same run)."""
    torch.manual_seed(123)
    sae = create_sae("topk", d_in=16, n_latents=64, k=4)
    config = TrainConfig(
        total_steps=TOTAL_STEPS,
        lr=2e-3,
        warmup_steps=5,
        schedule="cosine",
        min_lr_ratio=0.1,
        grad_clip=0.5,
        b_dec_init="mean",
        auxk_coefficient=1 / 32,
        dead_window_tokens=48,
        checkpoint_every=1,
        checkpoint_dir=checkpoint_dir,
        keep_checkpoints=2,
        resume=True,
        log_path=log_path,
        seed=7,
        progress=False,
    )
    return sae, stream(TOTAL_STEPS, delay_s), config


def main(argv: list[str]) -> int:
    checkpoint_dir, log_path, out_path = argv[:3]
    delay_s = float(argv[3]) if len(argv) > 3 else 0.0
    torch.set_num_threads(1)
    sae, batches, config = make_run(checkpoint_dir, log_path, delay_s)
    result = train_sae(sae, batches, config, loss_fn=mse_loss)
    save_sae(result.sae, out_path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
