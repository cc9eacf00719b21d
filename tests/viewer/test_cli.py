"""``saebench view`` as a user runs it: the demo served from a subprocess, and argument errors."""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import urllib.request

import pytest

from saebench.viewer.cli import bundle_folder, register, run_view
from saebench.viewer.demo import N_LATENTS

# The parser comes from the verb's own register(): the test does not depend on saebench/cli.py's wiring.
LAUNCH = (
    "import argparse, sys; from saebench.viewer.cli import register; p = argparse.ArgumentParser(); "
    "register(p.add_subparsers()); a = p.parse_args(sys.argv[1:]); sys.exit(a.func(a))"
)


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    return parser.parse_args(["view", *argv])


@pytest.mark.slow  # a fresh interpreter imports torch: ~3 s alone, ~10 s on a shared 2-core machine
def test_demo_serves_the_planted_world_on_a_free_port():
    env = dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE")
    process = subprocess.Popen(
        [sys.executable, "-c", LAUNCH, "view", "--demo", "--no-browser", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        line = process.stdout.readline()
        match = re.search(r"at (http://127\.0\.0\.1:\d+/)", line)
        assert match, (line, process.stderr.read() if process.poll() is not None else "")
        with urllib.request.urlopen(match.group(1) + "api/summary", timeout=10) as response:
            summary = json.load(response)
        assert summary["title"].startswith("demo: planted token world")
        assert summary["n_latents"] == N_LATENTS and summary["layout"]["grid"] == [4, 4]
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ((), "exactly one of a bundle folder or --demo"),
        (("somewhere", "--demo"), "exactly one of a bundle folder or --demo"),
        (("--demo", "--port", "70000"), "--port must be in 0..65535"),
    ],
)
def test_bad_arguments_are_explained(argv, message):
    with pytest.raises(ValueError, match=message):
        run_view(parse(*argv))


def test_a_folder_that_is_not_a_bundle_is_explained(tmp_path):
    with pytest.raises(ValueError, match="not a viewer bundle"):
        run_view(parse(str(tmp_path), "--no-browser"))


def test_a_run_work_folder_resolves_to_its_viewer_bundle(bundle_dir, tmp_path):
    run = tmp_path / "patchsae-mini-seed0"
    shutil.copytree(bundle_dir, run / "viewer")
    assert bundle_folder(run) == run / "viewer"
    assert bundle_folder(bundle_dir) == bundle_dir
    assert bundle_folder(tmp_path) == tmp_path  # neither: left as given, so loading names it
