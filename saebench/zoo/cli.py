"""``saebench zoo list|train`` and ``saebench cache-mini``: the mini tier's models and activation stores.

saebench zoo list [--smoke]                   # entries, config hashes, cached or not, accuracies
saebench zoo train [NAME ...] [--smoke]       # train (and cache) the named entries, or all of them
saebench cache-mini [--smoke] [--out DIR]     # train what is missing, cache every mini-tier store
"""

from __future__ import annotations

import argparse

from tabulate import tabulate

from saebench.zoo.mini_caches import PLANS, cache_mini_tier, manifest_path
from saebench.zoo.registry import ENTRIES, cache_root, ensure_trained, get_entry, load_trained


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``zoo`` verb (sub-verbs ``list`` and ``train``) and the ``cache-mini`` verb."""
    zoo = subparsers.add_parser("zoo", help="small models trained here on Fashion-MNIST (the mini tier)")
    verbs = zoo.add_subparsers(dest="zoo_command", metavar="{list,train}")
    verbs.required = True
    listing = verbs.add_parser("list", help="the zoo's entries, whether they are trained, their accuracies")
    listing.add_argument("--smoke", action="store_true", help="the smoke variants (1 epoch, 2,000 images)")
    listing.set_defaults(func=run_list)
    train = verbs.add_parser("train", help="train and cache zoo models (skips those already cached)")
    train.add_argument("names", nargs="*", metavar="NAME", help=f"default: all of {', '.join(ENTRIES)}")
    train.add_argument("--smoke", action="store_true", help="the smoke variants (1 epoch, 2,000 images)")
    train.add_argument("--retrain", action="store_true", help="train again even when cached")
    train.add_argument("--data-root", help="folder of the Fashion-MNIST IDX files (default: usual places)")
    train.set_defaults(func=run_train)

    mini = subparsers.add_parser(
        "cache-mini", help="cache every mini-tier activation store (resumable)", description=__doc__
    )
    mini.add_argument(
        "--smoke", action="store_true", help=f"{PLANS['smoke'].per_class * 10:,} images and the smoke zoo"
    )
    mini.add_argument("--out", help="store root (default: $SAEBENCH_CACHE/acts)")
    mini.add_argument("--data-root", help="folder of the Fashion-MNIST IDX files (default: usual places)")
    mini.add_argument("--batch-size", type=int, default=8, help="images per forward (small is faster on CPU)")
    mini.add_argument("--dtype", default="float16", choices=["float32", "float16", "bfloat16"])
    mini.add_argument("--workers", type=int, default=1, help="image-loading threads (0: inline)")
    mini.add_argument("--no-progress", action="store_true")
    mini.set_defaults(func=run_cache_mini)


def run_list(args: argparse.Namespace) -> int:
    rows = []
    for name in ENTRIES:
        entry = get_entry(name, smoke=args.smoke)
        trained = load_trained(entry)
        accuracy = f"{trained.accuracy:.4f}" if trained else "-"
        rows.append([entry.name, entry.objective, entry.config_hash(), accuracy, entry.description])
    print(tabulate(rows, headers=["name", "objective", "config hash", "accuracy", "model"]))
    print(f"cache: {cache_root() / 'zoo'}")
    return 0


def run_train(args: argparse.Namespace) -> int:
    for name in args.names or list(ENTRIES):
        trained = ensure_trained(get_entry(name, smoke=args.smoke), args.data_root, retrain=args.retrain)
        record = trained.record
        print(
            f"{trained.entry.name}\t{trained.entry.metric} {trained.accuracy:.4f}\t"
            f"trained in {record['train_seconds']:.0f} s\t{trained.entry.folder()}"
        )
    return 0


def run_cache_mini(args: argparse.Namespace) -> int:
    tier = cache_mini_tier(
        args.out,
        "smoke" if args.smoke else "mini",
        data_root=args.data_root,
        batch_size=args.batch_size,
        dtype=args.dtype,
        workers=args.workers,
        progress=not args.no_progress,
    )
    for key, info in tier.manifest["stores"].items():
        print(f"{key}\t{tier.root / info['folder']}\t{info['n_rows']} rows x {info['d']}")
    print(f"manifest: {manifest_path(tier.root, tier.manifest['plan'])}")
    return 0
