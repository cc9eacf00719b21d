"""Universal SAE architecture: per-model encoders (Linear -> BN -> ReLU -> per-row TopK), unit-norm bias-free
dictionaries around one shared code (usae.md §1.1)."""

from __future__ import annotations

import pytest
import torch

from saebench.sae.universal import UniversalSAE, UniversalSAEConfig, load_authors_checkpoints

DIMS = {"a": 6, "b": 4, "c": 5}
M, K = 12, 3


@pytest.fixture
def usae() -> UniversalSAE:
    torch.manual_seed(0)
    return UniversalSAE(UniversalSAEConfig(DIMS, M, k=K))


def test_codes_are_per_row_topk_of_relu_of_batchnorm(usae):
    x = torch.randn(10, 6)
    usae.eval()  # BN with its initial running stats (mean 0, var 1): pre = linear(x) / sqrt(1 + bn_eps)
    pre, codes = usae.encode("a", x)
    enc = usae.encoders["a"]
    expected_pre = enc.linear(x) / (1.0 + enc.norm.eps) ** 0.5
    torch.testing.assert_close(pre, expected_pre)
    relu = pre.relu()
    threshold = relu.topk(K, dim=1).values[:, -1:]
    torch.testing.assert_close(codes, torch.where(relu >= threshold, relu, torch.zeros_like(relu)))
    assert ((codes > 0).sum(dim=1) <= K).all()


def test_batchnorm_standardises_pre_codes_in_train_mode(usae):
    pre, _ = usae.encode("b", 3.0 * torch.randn(64, 4) + 2.0)
    # BN in train mode: each latent has batch mean 0 and (biased) variance 1, up to BN's eps of 1e-5.
    torch.testing.assert_close(pre.mean(0), torch.zeros(M), atol=1e-5, rtol=0)
    torch.testing.assert_close(pre.var(0, unbiased=False), torch.ones(M), atol=1e-3, rtol=0)


def test_dictionaries_have_unit_rows_and_decode_without_bias(usae):
    for name, d in DIMS.items():
        atoms = usae.dictionary(name)
        assert atoms.shape == (M, d)
        torch.testing.assert_close(atoms.norm(dim=1), torch.ones(M))
    codes = torch.zeros(2, M)
    codes[0, 5] = 2.0
    out = usae.decode("c", codes)
    torch.testing.assert_close(out[0], 2.0 * usae.dictionary("c")[5])
    torch.testing.assert_close(out[1], torch.zeros(5))  # no decoder bias


def test_forward_decodes_one_code_into_every_model(usae):
    out = usae("a", torch.randn(8, 6))
    assert set(out.x_hat) == set(DIMS)
    for name, d in DIMS.items():
        torch.testing.assert_close(out.x_hat[name], out.codes @ usae.dictionary(name))
        assert out.x_hat[name].shape == (8, d)


def test_model_parameters_are_one_encoder_and_one_dictionary(usae):
    params = usae.model_parameters("b")
    ids = {id(p) for p in params}
    assert id(usae.dictionaries["b"]) in ids
    assert ids == {id(p) for p in usae.encoders["b"].parameters()} | {id(usae.dictionaries["b"])}
    assert id(usae.dictionaries["a"]) not in ids


def test_bad_inputs_are_named(usae):
    with pytest.raises(KeyError, match="unknown model 'z'"):
        usae.encode("z", torch.randn(3, 6))
    with pytest.raises(ValueError, match=r"shape \(n, 6\)"):
        usae.encode("a", torch.randn(3, 4))
    with pytest.raises(ValueError, match="NaN"):
        usae.encode("a", torch.full((3, 6), float("nan")))
    with pytest.raises(ValueError, match="k must be"):
        UniversalSAEConfig(DIMS, 4, k=5)
    with pytest.raises(ValueError, match="model_dims"):
        UniversalSAEConfig({}, 4, k=1)


def _authors_state(encoder: torch.nn.Module, atoms: torch.Tensor) -> dict[str, torch.Tensor]:
    """One model's state dict as overcomplete's TopKSAE(mlp_bn_1) names it."""
    state = {f"encoder.final_block.0.{k}": v for k, v in encoder.linear.state_dict().items()}
    state |= {f"encoder.final_block.1.{k}": v for k, v in encoder.norm.state_dict().items()}
    return state | {"dictionary._weights": atoms, "dictionary.multiplier": torch.tensor(0.0)}


def test_load_authors_checkpoints_round_trips_a_synthetic_checkpoint(usae, tmp_path):
    x = torch.randn(16, 6)
    usae.encode("a", x)  # one train-mode pass moves the BN running stats off their defaults
    paths = {}
    for name in DIMS:
        paths[name] = tmp_path / f"uni_{name}_checkpoint_29.pth"
        state = _authors_state(usae.encoders[name], usae.dictionaries[name].detach() * 3.0)
        torch.save(
            {"model_state_dict": state, "optimizer_state_dict": {}, "epoch": 29, "lr": 1e-6}, paths[name]
        )
    loaded = load_authors_checkpoints(paths, k=K)
    assert loaded.models == tuple(DIMS)
    assert loaded.config.n_latents == M
    usae.eval()
    loaded.eval()
    out, again = usae("a", x), loaded("a", x)
    torch.testing.assert_close(again.codes, out.codes)
    for (
        name
    ) in DIMS:  # the raw atoms were scaled by 3: the unit-norm dictionary is unchanged (up to eps 1e-8)
        torch.testing.assert_close(again.x_hat[name], out.x_hat[name])


def test_load_authors_checkpoints_names_missing_files_and_keys(tmp_path):
    with pytest.raises(FileNotFoundError, match="uni_x_checkpoint_29.pth"):
        load_authors_checkpoints({"x": str(tmp_path / "uni_x_checkpoint_29.pth")})
    torch.save({"epoch": 3}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="no SAE state dict"):
        load_authors_checkpoints({"x": str(tmp_path / "bad.pth")})
    torch.save({"dictionary._weights": torch.randn(4, 3)}, tmp_path / "partial.pth")
    with pytest.raises(ValueError, match="missing keys"):
        load_authors_checkpoints({"x": str(tmp_path / "partial.pth")}, k=2)
