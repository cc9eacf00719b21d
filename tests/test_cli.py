"""The train/eval verbs end to end, and the CLI's error reporting."""

from __future__ import annotations

import json

import numpy as np
import pytest

from saebench.cli import main
from saebench.sae import load_sae

PLANTED = "planted:d=16,n_atoms=32,k=2,seed=3"


def test_train_writes_checkpoint_log_and_metrics_then_eval_reads_them(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(
        [
            "train",
            "--arch",
            "topk",
            "--k",
            "2",
            "--expansion",
            "2",
            "--data",
            PLANTED,
            "--steps",
            "20",
            "--batch-size",
            "64",
            "--eval-rows",
            "256",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    assert code == 0
    sae = load_sae(out / "sae")
    assert sae.architecture == "topk" and sae.n_latents == 32 and sae.config.k == 2
    log_lines = (out / "log.jsonl").read_text().splitlines()
    assert len(log_lines) == 20
    train_metrics = json.loads((out / "metrics.json").read_text())
    assert train_metrics["n_rows"] == 256 and 0 < train_metrics["l0"] <= 2
    capsys.readouterr()

    code = main(
        [
            "eval",
            "--checkpoint",
            str(out / "sae"),
            "--data",
            PLANTED,
            "--rows",
            "256",
            "--json",
            str(tmp_path / "eval.json"),
        ]
    )
    assert code == 0
    eval_metrics = json.loads((tmp_path / "eval.json").read_text())
    # Same SAE, same held-out rows: the evaluation must agree with the one written after training.
    assert eval_metrics["fvu_dataset"] == pytest.approx(train_metrics["fvu_dataset"], rel=1e-6)
    assert "mcc" in capsys.readouterr().out


def test_train_on_a_tensor_file(tmp_path):
    rows = np.random.default_rng(0).standard_normal((512, 8)).astype(np.float32)
    np.save(tmp_path / "acts.npy", rows)
    code = main(
        [
            "train",
            "--arch",
            "relu",
            "--data",
            str(tmp_path / "acts.npy"),
            "--steps",
            "5",
            "--batch-size",
            "128",
            "--out",
            str(tmp_path / "run"),
            "--no-progress",
        ]
    )
    assert code == 0
    assert "mcc" not in json.loads((tmp_path / "run" / "metrics.json").read_text())


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--arch", "topk", "--k", "999", "--data", PLANTED, "--out", "x"], "k=999"),
        (
            ["train", "--arch", "relu", "--data", "planted:colour=3", "--out", "x"],
            "unknown planted-world field",
        ),
        (["train", "--arch", "relu", "--data", "missing.npy", "--out", "x"], "missing.npy does not exist"),
    ],
)
def test_user_errors_print_one_line_and_exit_2(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SAEBENCH_DEBUG", raising=False)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_unknown_or_unsupported_architecture_is_refused_with_the_valid_names(capsys):
    for name in ("nope", "equivariant"):  # equivariant needs orbit batches: the train verb does not offer it
        with pytest.raises(SystemExit) as exit_info:
            main(["train", "--arch", name, "--data", PLANTED, "--out", "x"])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert f"invalid choice: '{name}'" in err and "batchtopk" in err and "topk" in err


def test_eval_refuses_data_of_another_width(tmp_path):
    out = tmp_path / "run"
    main(
        [
            "train",
            "--arch",
            "relu",
            "--data",
            PLANTED,
            "--steps",
            "2",
            "--batch-size",
            "32",
            "--out",
            str(out),
            "--no-progress",
            "--eval-rows",
            "64",
        ]
    )
    with pytest.raises(SystemExit, match="width 8 but the SAE expects d_in=16"):
        main(["eval", "--checkpoint", str(out / "sae"), "--data", "planted:d=8,n_atoms=32,k=2"])
