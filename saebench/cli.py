"""The ``saebench`` console script. Each verb lives in the module that owns it; this file only dispatches.

A command module exposes ``register(subparsers)``, which adds its sub-parser and sets ``func`` on it;
``func(args) -> int`` is the exit code.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

COMMAND_MODULES: tuple[str, ...] = (
    "saebench.train.cli",
    "saebench.acts.cli",
    "saebench.repro.cli",
    "saebench.zoo.cli",
    "saebench.viewer.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="saebench", description="Train, evaluate and compare sparse autoencoders on vision models."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


USER_ERRORS = (ValueError, KeyError, TypeError, FileNotFoundError, FileExistsError)


def main(argv: list[str] | None = None) -> int:
    """Run one verb. Errors caused by the user's input (bad names, shapes, missing files) print one line and
    exit with status 2; set ``SAEBENCH_DEBUG=1`` for the traceback."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except USER_ERRORS as err:
        if os.environ.get("SAEBENCH_DEBUG"):
            raise
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"saebench {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
