"""Checkpoints: bit-exact round trips for every architecture, and clear errors for the wrong architecture."""

from __future__ import annotations

import pytest
import torch

from saebench.sae import SAE, CheckpointArchitectureError, ReLUSAE, TopKSAE, create_sae, load_sae


def _trained_looking(make_sae, prime, architecture: str, **config) -> SAE:
    """An SAE whose every parameter and buffer differs from a fresh initialisation."""
    sae = make_sae(architecture, seed=5, **config)
    sae.set_input_normalization(torch.randn(sae.d_in), torch.rand(sae.d_in) + 0.5)
    with torch.no_grad():
        for p in sae.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return prime(sae, torch.randn(32, sae.d_in))


@pytest.mark.parametrize("tied", [False, True])
def test_round_trip_is_bit_exact(make_sae, prime, architecture, tmp_path, tied):
    sae = _trained_looking(make_sae, prime, architecture, tied=tied)
    sae.save(tmp_path / "sae")
    loaded = load_sae(tmp_path / "sae").eval()
    assert type(loaded) is type(sae) and loaded.config == sae.config
    state, loaded_state = sae.state_dict(), loaded.state_dict()
    assert state.keys() == loaded_state.keys()
    assert {"input_mean", "input_scale"} <= state.keys()
    if architecture == "batchtopk":
        assert "threshold" in state and not torch.isnan(state["threshold"])
    for name, tensor in state.items():
        assert loaded_state[name].dtype == tensor.dtype and torch.equal(loaded_state[name], tensor), name
    x = torch.randn(16, sae.d_in)
    out, loaded_out = sae(x), loaded(x)
    for field in out._fields:
        assert torch.equal(getattr(out, field), getattr(loaded_out, field)), field


def test_loading_through_the_class_checks_the_architecture(make_sae, tmp_path):
    make_sae("relu").save(tmp_path / "relu_sae.safetensors")
    assert isinstance(ReLUSAE.load(tmp_path / "relu_sae"), ReLUSAE)
    assert isinstance(SAE.load(tmp_path / "relu_sae.json"), ReLUSAE)
    with pytest.raises(CheckpointArchitectureError, match="'relu'.*'topk'"):
        TopKSAE.load(tmp_path / "relu_sae")
    with pytest.raises(CheckpointArchitectureError, match="'relu'.*'jumprelu'"):
        load_sae(tmp_path / "relu_sae", architecture="jumprelu")


def test_missing_checkpoint_file_is_named(make_sae, tmp_path):
    make_sae("topk").save(tmp_path / "sae")
    (tmp_path / "sae.json").unlink()
    with pytest.raises(FileNotFoundError, match="sae.json"):
        load_sae(tmp_path / "sae")


def test_unknown_architecture_lists_the_valid_ones():
    with pytest.raises(KeyError, match="'gated'.*batchtopk.*jumprelu.*relu.*topk"):
        create_sae("gated", d_in=8, n_latents=32)


def test_a_dot_in_the_checkpoint_name_is_kept(make_sae, tmp_path):
    sae = make_sae("relu")
    assert sae.save(tmp_path / "sae_lr1.5") == tmp_path / "sae_lr1.5.safetensors"
    assert (tmp_path / "sae_lr1.5.json").exists()
    assert torch.equal(load_sae(tmp_path / "sae_lr1.5").W_dec, sae.W_dec)
