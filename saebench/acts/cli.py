"""``saebench cache``: cache a backbone's activations over an image source into a content-hashed store.

    saebench cache --backbone efficientnet-lite0 --hook features --tokens patches \\
        --source fashion-mnist --subset 1000 --dtype float16 --out acts/

Run it under ``torchrun --nproc_per_node=N -m saebench.cli cache ...`` to split the images over N processes.
Re-running the same command resumes an interrupted run, or returns the finished store at once.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from saebench.acts.backbones import UnknownBackboneError, UnknownHookError, available_backbones, load_backbone
from saebench.acts.cache import DEFAULT_SHARD_ROWS, cache_activations
from saebench.acts.sources import (
    FashionMNISTSource,
    ImageFolderSource,
    SkimagePhotosSource,
    WebDatasetSource,
    subset,
)
from saebench.acts.store import STORAGE_DTYPES, StoreError
from saebench.acts.tokens import SELECTIONS


def _needs_root(kind: str, args: argparse.Namespace) -> str:
    if args.source_root is None:
        raise ValueError(f"--source {kind} needs --source-root (the folder or tar shards to read)")
    return args.source_root


#: ``--source`` name -> how to open it from the parsed arguments.
SOURCES: dict[str, Callable[[argparse.Namespace], Any]] = {
    "fashion-mnist": lambda a: FashionMNISTSource(split=a.split or "train", root=a.source_root),
    "imagefolder": lambda a: ImageFolderSource(_needs_root("imagefolder", a), split=a.split),
    "webdataset": lambda a: WebDatasetSource(_needs_root("webdataset", a)),
    "skimage": lambda a: SkimagePhotosSource(),
}


def open_source(args: argparse.Namespace) -> Any:
    """The source named by ``--source`` (``fashion_mnist`` also names ``fashion-mnist``), subset if asked."""
    name = args.source.replace("_", "-")
    if name not in SOURCES:
        raise ValueError(f"unknown source {args.source!r}; valid sources: {', '.join(SOURCES)}")
    source = SOURCES[name](args)
    if args.subset is not None or args.per_class is not None:
        source = subset(source, first_n=args.subset, per_class=args.per_class)
    return source


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "cache",
        help="cache backbone activations into a sharded, content-hashed store",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    model = parser.add_argument_group("backbone")
    model.add_argument(
        "--backbone", required=True, help=f"registered name: {', '.join(available_backbones())}"
    )
    model.add_argument("--hook", required=True, action="append", help="hook name (repeat for several hooks)")
    model.add_argument("--weights", help="local weights file (default: the registry's pretrained weights)")
    model.add_argument(
        "--random-init", action="store_true", help="seeded random weights instead of pretrained"
    )
    model.add_argument("--seed", type=int, default=0, help="seed of --random-init")
    model.add_argument("--device", default="cpu")
    rows = parser.add_argument_group("rows")
    rows.add_argument("--tokens", default="patches", choices=SELECTIONS)
    rows.add_argument("--grid", type=int, nargs=2, metavar=("ROWS", "COLS"), help="resize the patch grid")
    rows.add_argument("--dtype", default="float16", choices=list(STORAGE_DTYPES))
    data = parser.add_argument_group("images")
    data.add_argument("--source", required=True, help=f"one of: {', '.join(SOURCES)}")
    data.add_argument("--source-root", help="folder (imagefolder, fashion-mnist) or tar shards (webdataset)")
    data.add_argument("--split", help="train / test / val ... where the source has splits")
    data.add_argument("--subset", type=int, help="keep the first N images")
    data.add_argument("--per-class", type=int, help="keep the first N images of each class")
    run = parser.add_argument_group("run")
    run.add_argument("--out", required=True, help="root folder; the store goes to OUT/<content hash>/")
    run.add_argument("--batch-size", type=int, default=64)
    run.add_argument("--shard-rows", type=int, default=DEFAULT_SHARD_ROWS)
    run.add_argument("--workers", type=int, default=1, help="image-loading threads (0: inline)")
    run.add_argument("--no-progress", action="store_true")
    parser.set_defaults(func=run_cache)


def run_cache(args: argparse.Namespace) -> int:
    """Run the cache; print each store's folder. A bad argument prints the reason and returns 2."""
    try:
        source = open_source(args)
        backbone = load_backbone(
            args.backbone,
            weights=args.weights,
            device=args.device,
            pretrained=not args.random_init,
            seed=args.seed,
        )
        result = cache_activations(
            backbone,
            source,
            args.hook,
            tokens=args.tokens,
            grid=tuple(args.grid) if args.grid else None,
            out_root=args.out,
            batch_size=args.batch_size,
            dtype=args.dtype,
            shard_rows=args.shard_rows,
            workers=args.workers,
            progress=not args.no_progress,
        )
    except (UnknownBackboneError, UnknownHookError, ValueError, FileNotFoundError, StoreError) as err:
        print(f"saebench cache: error: {err}", file=sys.stderr)
        return 2
    for hook, store in result.items():
        print(f"{hook}\t{store.path}\t{store.n_rows} rows x {store.d} ({store.dtype})")
    return 0
