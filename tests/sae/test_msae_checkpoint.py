"""Loading the MSAE authors' checkpoint format (msae.md §3.1, §4.1) from synthetic files written in it."""

from __future__ import annotations

import pytest
import torch

from saebench.sae import MatryoshkaSAE, ReLUSAE, TopKSAE
from saebench.sae.msae_checkpoint import load_msae_checkpoint, parse_checkpoint_name

N, M = 8, 128


def _write(folder, name: str, tied: bool = False):
    """An authors'-format checkpoint with random weights; returns its path and the raw pieces."""
    g = torch.Generator().manual_seed(0)
    state = {
        "pre_bias": torch.randn(N, generator=g),
        "encoder": torch.randn(N, M, generator=g),
        "latent_bias": torch.randn(M, generator=g) * 0.1,
        "latents_activation_frequency": torch.zeros(M, dtype=torch.int64),
    }
    if not tied:
        state["decoder"] = torch.randn(M, N, generator=g)
    saved = {
        "model": state,
        "mean_center": torch.randn(N, generator=g),
        "scaling_factor": 0.25,
        "target_norm": 2.8,
    }
    path = folder / name
    torch.save(saved, path)
    return path, saved


def _authors_forward(saved, x, k: int | None, cap: float = 0.0, tied: bool = False):
    """The authors' forward (sae.py): standardise, encode, TopK-ReLU (or ReLU), cap, decode, undo."""
    s, mu, w = saved["scaling_factor"], saved["mean_center"], saved["model"]
    x_p = (x - mu) * s
    pre = (x_p - w["pre_bias"]) @ w["encoder"] + w["latent_bias"]
    if k is None:
        z = torch.relu(pre)
    else:
        values, idx = pre.topk(k, dim=-1)
        z = torch.zeros_like(pre).scatter(-1, idx, torch.relu(values))
    if cap > 0:
        z = cap * torch.tanh(z / cap)
    decoder = w["encoder"].T if tied else w["decoder"]
    return (z @ decoder + w["pre_bias"]) / s + mu


@pytest.mark.parametrize(
    ("name", "cls", "k", "cap", "tied"),
    [
        (
            "128_8_TopKReLU_16_False_False_0.0_cc3m_ViT-L~14_train_image_2905936_768.pth",
            TopKSAE,
            16,
            0.0,
            False,
        ),
        (
            "128_8_TopKReLU_64_RW_False_False_30.0_cc3m_ViT-L~14_train_image_2905936_768.pth",
            MatryoshkaSAE,
            64,
            30.0,
            False,
        ),
        ("128_8_ReLU_003_True_False_0.0_cc3m_ViT-B~16_train_image_2905936_512.pth", ReLUSAE, None, 0.0, True),
    ],
)
def test_loaded_sae_reproduces_the_authors_forward(tmp_path, name, cls, k, cap, tied):
    path, saved = _write(tmp_path, name, tied=tied)
    sae = load_msae_checkpoint(path)
    assert isinstance(sae, cls)
    x = torch.randn(5, N, generator=torch.Generator().manual_seed(1)) * 3
    expected = _authors_forward(saved, x, k, cap, tied)
    # same float32 operations in a different order (our normalise uses division by 1/s)
    assert torch.allclose(sae(x).x_hat, expected, rtol=1e-4, atol=1e-4)


def test_matryoshka_checkpoint_keeps_the_nesting_levels(tmp_path):
    path, _ = _write(tmp_path, "128_8_TopKReLU_64_UW_False_False_0.0_data.pth")
    sae = load_msae_checkpoint(path)
    assert sae.k_levels == (64, 128) and sae.config.weighting == "uw" and sae.inference_k == 64


def test_name_parsing_and_errors(tmp_path):
    spec = parse_checkpoint_name("6144_768_BatchTopKReLU_32_False_False_0.0_x.pth")
    assert (spec.n_latents, spec.n_inputs, spec.activation, spec.k, spec.weighting) == (
        6144,
        768,
        "BatchTopKReLU",
        32,
        None,
    )
    with pytest.raises(ValueError, match="unsupported activation"):
        parse_checkpoint_name("16_4_JumpReLU_16_False_False_0.0_x.pth")
    with pytest.raises(ValueError, match="not an MSAE checkpoint name"):
        parse_checkpoint_name("model.pth")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_msae_checkpoint(tmp_path / "128_8_TopKReLU_16_False_False_0.0_x.pth")
    path, _ = _write(tmp_path, "128_8_TopKReLU_16_False_True_0.0_x.pth")
    with pytest.raises(ValueError, match="per-sample input normalisation"):
        load_msae_checkpoint(path)
