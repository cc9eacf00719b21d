"""The ``saebench train`` and ``saebench eval`` verbs.

``saebench train --arch topk --k 8 --data planted:d=64,n_atoms=256,k=8 --steps 2000 --out runs/topk``
trains one SAE and writes ``runs/topk/sae.{safetensors,json}``, ``runs/topk/log.jsonl``, checkpoints under
``runs/topk/checkpoints/`` (``--resume`` continues from the newest) and ``runs/topk/metrics.json`` (held-out
evaluation). Under ``torchrun`` every rank reads the same global batches and takes its share.

``saebench eval --checkpoint runs/topk/sae --data ...`` prints the evaluation table (``--json`` writes it).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from tabulate import tabulate

from saebench.data.inputs import open_data
from saebench.evaluate import evaluate_sae
from saebench.sae import available_architectures, create_sae, load_sae
from saebench.sae.base import sae_class
from saebench.train.config import TrainConfig
from saebench.train.distributed import init_from_env
from saebench.train.losses import jumprelu_l0_loss, relu_l1_loss
from saebench.train.trainer import train_sae


def cli_architectures() -> list[str]:
    """Architectures ``saebench train`` can build from its flags and train on plain batches."""
    return [name for name in available_architectures() if sae_class(name).trains_from_config_alone]


def _has_k(architecture: str) -> bool:
    return "k" in {f.name for f in dataclasses.fields(sae_class(architecture).config_class)}


def register(subparsers: argparse._SubParsersAction) -> None:
    train = subparsers.add_parser("train", help="train one SAE", description=__doc__.split("\n\n")[1])
    train.add_argument(
        "--arch",
        required=True,
        choices=cli_architectures(),
        metavar="ARCH",
        help=f"one of {', '.join(cli_architectures())}",
    )
    train.add_argument(
        "--data", required=True, help="planted:FIELD=VALUE,... or a .npy/.pt/.safetensors (n, d) file"
    )
    train.add_argument("--out", required=True, type=Path, help="output folder")
    size = train.add_mutually_exclusive_group()
    size.add_argument("--expansion", type=float, default=4.0, help="n_latents = expansion * d (default 4)")
    size.add_argument("--n-latents", type=int, help="dictionary size (overrides --expansion)")
    train.add_argument("--k", type=int, help="active latents per row (TopK-family architectures)")
    train.add_argument("--l1", type=float, default=1e-3, help="L1 coefficient (relu)")
    train.add_argument("--l0", type=float, default=1e-3, help="L0 coefficient (jumprelu)")
    train.add_argument("--steps", type=int, default=2000)
    train.add_argument("--batch-size", type=int, default=1024, help="global batch size (rows)")
    train.add_argument("--lr", type=float, default=1e-3)
    train.add_argument("--optimizer", default="adam", choices=("adam", "adamw"))
    train.add_argument("--schedule", default="cosine", choices=("constant", "cosine"))
    train.add_argument("--warmup", type=int, default=0, help="linear warm-up steps")
    train.add_argument("--grad-clip", type=float)
    train.add_argument(
        "--auxk", type=float, default=0.0, help="AuxK coefficient (topk family; Gao et al. use 1/32)"
    )
    train.add_argument("--b-dec-init", choices=("zeros", "mean", "geometric_median"))
    train.add_argument("--amp", choices=("bf16", "fp16"), help="autocast dtype (fp32 master weights)")
    train.add_argument("--checkpoint-every", type=int)
    train.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    train.add_argument("--eval-rows", type=int, default=8192, help="held-out rows for metrics.json")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--no-progress", action="store_true")
    train.set_defaults(func=run_train)

    evaluate = subparsers.add_parser("eval", help="evaluate a saved SAE on data")
    evaluate.add_argument(
        "--checkpoint", required=True, type=Path, help="path of sae.safetensors (or its stem)"
    )
    evaluate.add_argument(
        "--data", required=True, help="planted:FIELD=VALUE,... or a .npy/.pt/.safetensors file"
    )
    evaluate.add_argument("--rows", type=int, default=8192, help="rows to evaluate on")
    evaluate.add_argument("--batch-size", type=int, default=4096)
    evaluate.add_argument("--json", type=Path, help="also write the metrics here")
    evaluate.set_defaults(func=run_eval)


def _build_sae(args: argparse.Namespace, d: int):
    n_latents = args.n_latents or int(round(args.expansion * d))
    config = {"d_in": d, "n_latents": n_latents}
    if _has_k(args.arch):
        if args.k is None:
            raise SystemExit(f"--arch {args.arch} needs --k (active latents per row)")
        config["k"] = args.k
    return create_sae(args.arch, **config)


def _loss_for(args: argparse.Namespace):
    if args.arch == "relu":
        return relu_l1_loss(args.l1)
    if args.arch == "jumprelu":
        return jumprelu_l0_loss(args.l0)
    return None  # the architecture's default loss


def run_train(args: argparse.Namespace) -> int:
    context = init_from_env()
    data = open_data(args.data)
    sae = _build_sae(args, data.d)
    config = TrainConfig(
        total_steps=args.steps,
        lr=args.lr,
        optimizer=args.optimizer,
        schedule=args.schedule,
        warmup_steps=args.warmup,
        grad_clip=args.grad_clip,
        auxk_coefficient=args.auxk,
        b_dec_init=args.b_dec_init,
        amp_dtype=args.amp,
        checkpoint_every=args.checkpoint_every,
        checkpoint_dir=str(args.out / "checkpoints") if (args.checkpoint_every or args.resume) else None,
        resume=args.resume,
        log_path=str(args.out / "log.jsonl"),
        seed=args.seed,
        progress=not args.no_progress,
    )
    result = train_sae(
        sae, data.batches(args.batch_size, args.steps, seed=args.seed), config, loss_fn=_loss_for(args)
    )
    if not context.is_main:
        return 0
    result.sae.save(args.out / "sae", extra={"data": data.description, "train_config": config.to_dict()})
    metrics = evaluate_sae(result.sae, [data.heldout(args.eval_rows)], true_atoms=data.true_atoms)
    (args.out / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    print(_table(metrics))
    return 0


def run_eval(args: argparse.Namespace) -> int:
    sae = load_sae(args.checkpoint)
    data = open_data(args.data)
    if data.d != sae.d_in:
        raise SystemExit(f"the data has width {data.d} but the SAE expects d_in={sae.d_in}")
    rows = data.heldout(args.rows)
    metrics = evaluate_sae(sae, rows.split(args.batch_size), true_atoms=data.true_atoms)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    print(_table(metrics))
    return 0


def _table(metrics: dict[str, float]) -> str:
    return tabulate(sorted(metrics.items()), headers=("metric", "value"), floatfmt=".4g")
