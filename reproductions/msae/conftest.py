"""Fixtures of the MSAE reproduction's own tests: its sibling modules, imported as the pipeline does."""

from __future__ import annotations

import importlib
from pathlib import Path
from types import SimpleNamespace

import pytest

from saebench.repro.pipeline import load_reproduction

MODULES = ("embedding_sweep", "frontier", "full_tier", "mini_tier", "checks")


@pytest.fixture(scope="module")
def msae() -> SimpleNamespace:
    """``msae.<module>`` for each module of :data:`MODULES` (``saebench_reproductions.msae.<module>``)."""
    load_reproduction(Path(__file__).parent).pipeline()
    return SimpleNamespace(
        **{name: importlib.import_module(f"saebench_reproductions.msae.{name}") for name in MODULES}
    )
