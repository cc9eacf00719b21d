"""Data-parallel training run for the distributed test: ``torchrun --nproc_per_node=N ddp_worker.py OUT_DIR``.

Every rank builds the same run (``make_run``) and trains it; the trainer shards each global batch of 31 rows
(an uneven split on 2 ranks), all-reduces gradients and dead-latent statistics, and lets only rank 0 write
the checkpoints and the log. Rank 0 saves the final SAE to ``OUT_DIR/final`` and writes ``OUT_DIR/ranks.json``
with the world size and the largest weight difference between ranks.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import torch

from saebench.data.synthetic import PlantedWorld
from saebench.sae import create_sae, save_sae
from saebench.train import TrainConfig, train_sae
from saebench.train import distributed as dist_helpers
from saebench.train.losses import mse_loss

TOTAL_STEPS = 12
GLOBAL_BATCH = 31


def make_run(out_dir: Path) -> tuple[torch.nn.Module, Iterator[torch.Tensor], TrainConfig]:
    """The SAE, global batches and config (identical on every rank and in the single-process reference)."""
    torch.manual_seed(11)
    sae = create_sae("topk", d_in=16, n_latents=64, k=4)
    world = PlantedWorld(d=16, n_atoms=32, k=3, noise_std=0.01, seed=2)
    config = TrainConfig(
        total_steps=TOTAL_STEPS,
        lr=1e-3,
        warmup_steps=2,
        schedule="cosine",
        grad_clip=1.0,
        b_dec_init="geometric_median",
        dead_window_tokens=2 * GLOBAL_BATCH,
        checkpoint_every=6,
        checkpoint_dir=str(out_dir / "ckpt"),
        log_path=str(out_dir / "log.jsonl"),
        progress=False,
    )
    return sae, world.batches(GLOBAL_BATCH, TOTAL_STEPS), config


def main(out_dir: Path) -> int:
    torch.set_num_threads(1)
    context = dist_helpers.init_from_env()
    sae, batches, config = make_run(out_dir)
    result = train_sae(sae, batches, config, loss_fn=mse_loss)
    flat = torch.cat([p.detach().reshape(-1) for p in result.sae.parameters()])
    gathered = dist_helpers.all_gather_objects(flat)
    if context.is_main:
        save_sae(result.sae, out_dir / "final")
        spread = max((g - flat).abs().max().item() for g in gathered)
        (out_dir / "ranks.json").write_text(
            json.dumps({"world_size": context.world_size, "max_rank_diff": spread})
        )
    dist_helpers.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
