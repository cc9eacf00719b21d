"""The overcomplete import helper: the matplotlib alias and the error when the package is missing."""

from __future__ import annotations

import importlib

import matplotlib
import matplotlib.cm
import pytest

from saebench import peers


def test_import_gives_the_package_with_its_sae_classes(overcomplete):
    for name in ("SAE", "TopKSAE", "BatchTopKSAE", "JumpSAE"):
        assert hasattr(overcomplete, name)
    # the alias is in place (matplotlib >= 3.9 has no cm.get_cmap of its own) and behaves like the registry
    assert matplotlib.cm.get_cmap("viridis").name == matplotlib.colormaps["viridis"].name


def test_alias_is_added_only_where_missing(monkeypatch):
    sentinel = object()
    monkeypatch.setattr(matplotlib.cm, "get_cmap", sentinel, raising=False)
    peers._alias_matplotlib_get_cmap()
    assert matplotlib.cm.get_cmap is sentinel
    monkeypatch.delattr(matplotlib.cm, "get_cmap")
    peers._alias_matplotlib_get_cmap()
    assert matplotlib.cm.get_cmap == matplotlib.colormaps.get_cmap


def test_missing_package_says_how_to_install(monkeypatch):
    real_import = importlib.import_module

    def fake_import(name, *args):
        if name == "overcomplete":
            raise ModuleNotFoundError("No module named 'overcomplete'", name="overcomplete")
        return real_import(name, *args)

    monkeypatch.setattr(peers.importlib, "import_module", fake_import)
    with pytest.raises(ImportError, match=r"pip install -e \.\[dev\]"):
        peers.import_overcomplete()
