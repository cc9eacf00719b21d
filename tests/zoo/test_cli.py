"""``saebench zoo list|train`` and ``saebench cache-mini`` parse and run (through the module's register())."""

from __future__ import annotations

import argparse

import pytest

from saebench.zoo import SMOKE_ENTRIES, load_trained
from saebench.zoo.cli import register


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="saebench")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_zoo_list_shows_every_entry_and_whether_it_is_trained(zoo_cache, capsys):
    assert _run(["zoo", "list"]) == 0
    out = capsys.readouterr().out
    for name in ("zoo-cnn", "zoo-vit", "zoo-mlp", "zoo-clip"):
        assert name in out
    assert str(zoo_cache / "zoo") in out


def test_zoo_train_smoke_trains_and_caches_then_lists_the_accuracy(zoo_cache, capsys, fashion_mnist):
    assert _run(["zoo", "train", "zoo-mlp", "--smoke"]) == 0
    trained = load_trained(SMOKE_ENTRIES["zoo-mlp"])
    assert trained is not None
    assert f"zoo-mlp-smoke\ttest_accuracy {trained.accuracy:.4f}" in capsys.readouterr().out
    _run(["zoo", "list", "--smoke"])
    assert f"{trained.accuracy:.4f}" in capsys.readouterr().out


def test_cache_mini_parses_its_options():
    parser = argparse.ArgumentParser(prog="saebench")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["cache-mini", "--smoke", "--out", "acts", "--dtype", "float32"])
    assert (args.smoke, args.out, args.dtype, args.batch_size) == (True, "acts", "float32", 8)
    with pytest.raises(SystemExit):
        parser.parse_args(["zoo", "train", "--epochs", "3"])
