"""The evaluator streams batches and restores the SAE's mode."""

from __future__ import annotations

import pytest
import torch

from saebench.evaluate import evaluate_sae
from saebench.metrics import fvu_dataset, mcc
from saebench.sae import create_sae


def test_streaming_evaluation_matches_one_shot_metrics():
    torch.manual_seed(0)
    sae = create_sae("topk", d_in=8, n_latents=32, k=3)
    rows = torch.randn(300, 8)
    streamed = evaluate_sae(sae, rows.split(64))
    with torch.no_grad():
        out = sae(rows)
    assert streamed["n_rows"] == 300 and streamed["n_batches"] == 5
    assert streamed["fvu_dataset"] == pytest.approx(
        fvu_dataset(rows, out.x_hat), rel=1e-5
    )  # fp32 vs fp64 sums
    assert streamed["l0"] == pytest.approx((out.codes != 0).sum(dim=1).float().mean().item())
    assert "mcc" not in streamed


def test_true_atoms_add_mcc_and_mode_is_restored():
    sae = create_sae("relu", d_in=4, n_latents=8)
    sae.train()
    atoms = torch.nn.functional.normalize(torch.randn(6, 4), dim=1)
    metrics = evaluate_sae(sae, [torch.randn(10, 4)], true_atoms=atoms)
    assert metrics["mcc"] == pytest.approx(mcc(sae.W_dec.detach(), atoms))
    assert sae.training


def test_no_batches_is_an_error():
    with pytest.raises(ValueError, match="got no batches"):
        evaluate_sae(create_sae("relu", d_in=4, n_latents=8), [])
