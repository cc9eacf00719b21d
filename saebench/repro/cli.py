"""CLI verbs ``saebench reproduce`` and ``saebench leaderboard``.

``saebench reproduce <paper>|all --tier toy|mini|full [--seed N] [--results DIR]`` runs each pipeline once,
writes its run record, prints the comparison table (and a diff for every failing claim), rebuilds the
leaderboard, and exits 1 when a claim fails or a pipeline crashes (skipped claims do not fail).
``saebench leaderboard [--results DIR]`` rebuilds ``<results>/leaderboard.md`` from the records alone.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from pathlib import Path

from saebench.repro.compare import comparison_table, failure_message
from saebench.repro.leaderboard import build_leaderboard
from saebench.repro.pipeline import Reproduction, default_reproductions_root, discover_reproductions
from saebench.repro.runner import run_reproduction
from saebench.repro.tiers import DEFAULT_TIER, TIERS

__all__ = ["register", "reproduce_command", "leaderboard_command"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``reproduce`` and ``leaderboard`` sub-commands."""
    reproduce = subparsers.add_parser(
        "reproduce",
        help="run reproductions, compare with their claims",
        description=reproduce_command.__doc__,
    )
    reproduce.add_argument("paper", help="a folder name under reproductions/, or 'all'")
    reproduce.add_argument("--tier", choices=TIERS, default=DEFAULT_TIER, help="default: %(default)s")
    reproduce.add_argument("--seed", type=int, default=0, help="seed handed to the pipeline (default: 0)")
    reproduce.add_argument(
        "--results",
        type=Path,
        default=Path("results"),
        help="results folder: records go to <results>/runs/ (default: results)",
    )
    reproduce.add_argument(
        "--reproductions",
        type=Path,
        default=None,
        help="folder of reproductions (default: ./reproductions, else the checkout's)",
    )
    reproduce.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="scratch folder for pipelines (default: .saebench_cache/repro/<paper>-<tier>-seed<N>)",
    )
    reproduce.add_argument("--no-leaderboard", action="store_true", help="do not rebuild the leaderboard")
    reproduce.set_defaults(func=reproduce_command)

    leaderboard = subparsers.add_parser(
        "leaderboard",
        help="rebuild results/leaderboard.md from the run records",
        description=leaderboard_command.__doc__,
    )
    leaderboard.add_argument("--results", type=Path, default=Path("results"), help="default: results")
    leaderboard.set_defaults(func=leaderboard_command)


def _select(paper: str, root: Path) -> list[Reproduction]:
    available = discover_reproductions(root)
    if paper == "all":
        return available
    chosen = [r for r in available if r.name == paper]
    if not chosen:
        names = ", ".join(r.name for r in available) or "none"
        raise LookupError(f"no reproduction named {paper!r} under {root}; available: {names}, or 'all'")
    return chosen


def reproduce_command(args: argparse.Namespace) -> int:
    """Run reproductions at a tier, write their records, print the claim tables, rebuild the leaderboard."""
    root = args.reproductions or default_reproductions_root()
    try:
        reproductions = _select(args.paper, root)
    except (LookupError, FileNotFoundError) as exc:
        print(f"saebench reproduce: {exc}", file=sys.stderr)
        return 2
    failed: list[str] = []
    for reproduction in reproductions:
        print(f"== {reproduction.name} · {args.tier} · seed {args.seed} ==")
        workdir = args.workdir / reproduction.name if args.workdir else None
        try:
            report = run_reproduction(reproduction, args.tier, args.seed, args.results, workdir)
        except Exception:
            traceback.print_exc()
            print(f"{reproduction.name}: the pipeline crashed; no record written\n", file=sys.stderr)
            failed.append(reproduction.name)
            continue
        print(comparison_table(report.outcomes) if report.outcomes else "(no claims at this tier)")
        for outcome in report.outcomes:
            if outcome.failed:
                print("\n" + failure_message(outcome))
        if report.record_path:
            print(f"record: {report.record_path}")
        if report.note:
            print(report.note)
        print()
        if report.failed:
            failed.append(reproduction.name)
    if not args.no_leaderboard:
        print(f"leaderboard: {build_leaderboard(args.results)}")
    if failed:
        print(f"FAILED: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def leaderboard_command(args: argparse.Namespace) -> int:
    """Rebuild the leaderboard markdown and Pareto figures from <results>/runs/*.json."""
    print(build_leaderboard(args.results))
    return 0
