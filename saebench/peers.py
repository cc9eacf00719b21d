"""Access to peer libraries used as reference implementations (parity tests, benchmarks).

``overcomplete`` (KempnerInstitute/overcomplete, PyPI ``overcomplete``; the ``dev`` extra) and, for the
training benchmark only, ``sae-lens`` (PyPI ``sae-lens``; the ``bench`` extra: it pulls in transformer-lens,
wandb and datasets, so nothing else depends on it).
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["import_overcomplete", "import_sae_lens"]


def _alias_matplotlib_get_cmap() -> None:
    """overcomplete 0.3.0 calls ``matplotlib.cm.get_cmap`` at import time; matplotlib 3.9 removed it. Alias it
    to ``matplotlib.colormaps.get_cmap`` (same one-argument behaviour) only where it is missing."""
    import matplotlib
    import matplotlib.cm

    if not hasattr(matplotlib.cm, "get_cmap"):
        matplotlib.cm.get_cmap = matplotlib.colormaps.get_cmap


def import_overcomplete() -> ModuleType:
    """Import and return the ``overcomplete`` package, after the matplotlib compatibility alias above.

    Raises ``ImportError`` saying how to install it when it (or one of its own dependencies) is missing.
    """
    _alias_matplotlib_get_cmap()
    try:
        return importlib.import_module("overcomplete")
    except ImportError as err:
        raise ImportError(
            f"the peer library 'overcomplete' could not be imported ({err}); it is a development dependency: "
            "install it with `pip install -e .[dev]`"
        ) from err


def import_sae_lens() -> ModuleType:
    """Import and return the ``sae_lens`` package; ``ImportError`` saying how to install it when missing."""
    try:
        return importlib.import_module("sae_lens")
    except ImportError as err:
        raise ImportError(
            f"the peer library 'sae-lens' could not be imported ({err}); it is an optional benchmark peer: "
            "install it with `pip install -e .[bench]`"
        ) from err
