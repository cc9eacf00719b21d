"""The sparse TopK path: ``SparseCodes``, the sparse decoder and encoder autograd functions, and the SAE's
sparse forward pass against the dense definition (``activation`` + ``decode``).

Tolerances. float32 results that sum the same terms in another order (embedding-bag vs matmul, sparse vs dense
gradient accumulation) agree to about 1e-6 relative here (at most a few dozen terms of size ~1); 1e-5 leaves
room for that. Codes and the selected latents must be exactly equal: both paths run the same matmul and the
same ``topk`` on the same operands.
"""

from __future__ import annotations

import copy

import pytest
import torch

from saebench.sae.sparse_decode import (
    SparseCodes,
    affine_select,
    csr_selection,
    row_selection,
    sparse_decode,
    sparse_latent_totals,
)

TOL = {"rtol": 1e-5, "atol": 1e-5}


def _codes(values, indices, offsets, n_latents) -> SparseCodes:
    offsets = torch.tensor(offsets)
    return SparseCodes(torch.tensor(values), torch.tensor(indices), offsets, n_latents, (len(offsets) - 1,))


def _top_k_rows(k: int):
    return lambda pre: row_selection(*pre.topk(k, dim=-1, sorted=False))


def _random_codes(n: int, h: int, generator: torch.Generator) -> SparseCodes:
    """Rows with 0 to h entries (an empty row, a full row, and random ones), values requiring grad."""
    mask = torch.rand(n, h, generator=generator) < 0.3
    mask[0] = False
    mask[1] = True
    dense = torch.randn(n, h, generator=generator) * mask
    codes = SparseCodes.from_dense(dense)
    return codes._replace(values=codes.values.detach().requires_grad_())


# ------------------------------------------------------------------------------------- SparseCodes
def test_sparse_codes_round_trip_through_dense_and_keep_indices_sorted():
    dense = torch.tensor([[0.0, 2.0, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0], [3.0, 0.0, 0.0, 0.0]])
    codes = SparseCodes.from_dense(dense.view(3, 1, 4))
    assert codes.indices.tolist() == [1, 3, 0] and codes.offsets.tolist() == [0, 2, 2, 3]
    assert codes.row_ids().tolist() == [0, 0, 2] and codes.batch_shape == (3, 1)
    assert torch.equal(codes.to_dense(), dense.view(3, 1, 4))
    # topk order is arbitrary within a row; row_selection sorts indices and carries the values along
    values, indices, offsets = row_selection(torch.tensor([[5.0, 7.0]]), torch.tensor([[3, 1]]))
    assert values.tolist() == [7.0, 5.0] and indices.tolist() == [1, 3] and offsets.tolist() == [0, 2]


def test_sparse_latent_totals_match_the_dense_counts():
    """firing counts (|z| > 0.5), activation sums and exact zeros, counted by hand on these codes:
    latent 0: 2.0 (fires); latent 1: -1.0 (fires) and 0.25 (below threshold); latent 2: a stored 0."""
    codes = _codes([2.0, -1.0, 0.0, 0.25], [0, 1, 2, 1], [0, 3, 4], n_latents=4)
    counts, sums, zeros = sparse_latent_totals(codes, threshold=0.5)
    assert counts.tolist() == [1, 1, 0, 0]
    assert sums.tolist() == [2.0, -0.75, 0.0, 0.0] and sums.dtype == torch.float64
    assert zeros == 2 * 4 - 3  # 8 entries, 3 non-zero (the stored 0 counts as a zero)
    assert codes.nonzero_count() == 3


# ----------------------------------------------------------------------------------- the decoder
def test_sparse_decode_hand_computed_forward_and_backward():
    """W_dec rows a0 = [1, 0], a1 = [0, 2], a2 = [3, 1]. Row 0 = 2 a0 + 1 a2 = [5, 1]; row 1 is empty;
    row 2 = 0.5 a1 = [0, 1]. With upstream g = [[1, 1], [1, -1], [2, 0]]:
    grad values = [g0.a0, g0.a2, g2.a1] = [1, 4, 0];
    grad W_dec: a0 <- 2 g0 = [2, 2], a1 <- 0.5 g2 = [1, 0], a2 <- 1 g0 = [1, 1]."""
    weight = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 1.0]], requires_grad=True)
    codes = _codes([2.0, 1.0, 0.5], [0, 2, 1], [0, 2, 2, 3], n_latents=3)
    codes = codes._replace(values=codes.values.requires_grad_())
    out = sparse_decode(codes, weight)
    assert torch.equal(out, torch.tensor([[5.0, 1.0], [0.0, 0.0], [0.0, 1.0]]))
    (out * torch.tensor([[1.0, 1.0], [1.0, -1.0], [2.0, 0.0]])).sum().backward()
    assert torch.equal(codes.values.grad, torch.tensor([1.0, 4.0, 0.0]))
    assert torch.equal(weight.grad, torch.tensor([[2.0, 2.0], [1.0, 0.0], [1.0, 1.0]]))


def test_sparse_decode_matches_the_dense_matmul_and_its_gradients():
    generator = torch.Generator().manual_seed(0)
    codes = _random_codes(12, 20, generator)
    weight = torch.randn(20, 6, generator=generator, requires_grad=True)
    upstream = torch.randn(12, 6, generator=generator)
    (sparse_decode(codes, weight) * upstream).sum().backward()
    grads = codes.values.grad.clone(), weight.grad.clone()
    codes.values.grad, weight.grad = None, None
    out = codes.to_dense() @ weight
    (out * upstream).sum().backward()
    torch.testing.assert_close(sparse_decode(codes, weight), out, **TOL)
    torch.testing.assert_close(grads[0], codes.values.grad, **TOL)
    torch.testing.assert_close(grads[1], weight.grad, **TOL)


# ----------------------------------------------------------------------------------- the encoder
@pytest.mark.parametrize("use_pre", [False, True], ids=["selected-only", "selected-and-pre"])
@pytest.mark.parametrize("centred", [False, True], ids=["no-centre", "centre"])
def test_affine_select_gradients_match_the_dense_computation(use_pre, centred):
    """Gradients through the selected values alone (the sparse backward), and through both the values and
    the dense pre-activations (as AuxK uses them), equal those of the plain dense computation."""
    generator = torch.Generator().manual_seed(1)
    n, d, h, k = 9, 5, 16, 3
    leaves = {
        "x": torch.randn(n, d, generator=generator),
        "centre": torch.randn(d, generator=generator),
        "weight": torch.randn(d, h, generator=generator),
        "bias": torch.randn(h, generator=generator),
    }
    values_weights = torch.randn(n * k, generator=generator)
    pre_weights = torch.randn(n, h, generator=generator)

    def gradients(sparse: bool) -> dict[str, torch.Tensor]:
        t = {name: value.clone().requires_grad_() for name, value in leaves.items()}
        centre = t["centre"] if centred else None
        if sparse:
            pre, values, *_ = affine_select(t["x"], centre, t["weight"], t["bias"], _top_k_rows(k))
        else:
            pre = (t["x"] - centre if centred else t["x"]) @ t["weight"] + t["bias"]
            _, indices, _ = _top_k_rows(k)(pre.detach())
            values = pre.reshape(-1)[torch.arange(n).repeat_interleave(k) * h + indices]
        loss = (values * values_weights).sum() + ((pre * pre_weights).sum() if use_pre else 0.0)
        loss.backward()
        return {name: value.grad for name, value in t.items() if value.grad is not None}

    sparse, dense = gradients(True), gradients(False)
    expected = {"x", "centre", "weight", "bias"} if centred else {"x", "weight", "bias"}
    assert sparse.keys() == dense.keys() == expected
    for name in dense:
        torch.testing.assert_close(sparse[name], dense[name], **TOL, msg=name)


# -------------------------------------------------------------------------------- the SAE's paths
def _pair(make_sae, architecture: str, **overrides):
    """The same SAE twice: one on the sparse path, one forced onto the dense path. Non-trivial input
    normalisation and decoder bias so that every term of the forward pass matters."""
    sparse = make_sae(architecture, **overrides)
    if sparse.config.decoder_bias:
        with torch.no_grad():
            sparse.b_dec.normal_(0.0, 0.2)
    d = sparse.d_in
    sparse.set_input_normalization(torch.linspace(-0.3, 0.3, d), torch.linspace(0.5, 2.0, d))
    dense = copy.deepcopy(sparse)
    dense.sparse_decoding = False
    assert sparse.uses_sparse_path and not dense.uses_sparse_path
    return sparse, dense


def _run(sae, x, upstream):
    out = sae(x)
    (out.x_hat * upstream).sum().backward()
    return out, {name: p.grad.clone() for name, p in sae.named_parameters()}


@pytest.mark.parametrize("architecture", ["topk", "batchtopk"])
@pytest.mark.parametrize(
    "overrides",
    [{}, {"tied": True}, {"pre_encoder_bias": False}, {"pre_encoder_bias": False, "decoder_bias": False}],
    ids=["default", "tied", "no-pre-bias", "no-biases"],
)
def test_sparse_path_matches_dense_path_in_training(make_sae, architecture, overrides):
    sparse, dense = _pair(make_sae, architecture, **overrides)
    x, upstream = torch.randn(2, 7, sparse.d_in), torch.randn(2, 7, sparse.d_in)
    (out_s, grads_s), (out_d, grads_d) = _run(sparse.train(), x, upstream), _run(dense.train(), x, upstream)
    assert torch.equal(out_s.codes, out_d.codes) and torch.equal(out_s.pre_codes, out_d.pre_codes)
    torch.testing.assert_close(out_s.x_hat, out_d.x_hat, **TOL)
    assert grads_s.keys() == grads_d.keys()
    for name in grads_d:
        torch.testing.assert_close(grads_s[name], grads_d[name], **TOL, msg=name)
    if architecture == "batchtopk":
        assert torch.equal(sparse.threshold, dense.threshold)


def test_batchtopk_eval_path_matches_dense_including_rows_with_no_active_latent(make_sae):
    sparse, dense = _pair(make_sae, "batchtopk")
    x = torch.randn(40, sparse.d_in)
    with torch.no_grad():
        # the median of the rows' largest pre-activation: about half the rows have no active latent
        threshold = sparse.pre_activation(x).max(dim=-1).values.median()
        sparse.threshold.fill_(threshold)
        dense.threshold.fill_(threshold)
    out_s, out_d = sparse.eval()(x), dense.eval()(x)
    active_rows = out_d.codes.ne(0).any(dim=-1)
    assert active_rows.any() and not active_rows.all()
    assert torch.equal(out_s.codes, out_d.codes)
    torch.testing.assert_close(out_s.x_hat, out_d.x_hat, **TOL)
    with torch.no_grad():
        sparse.threshold.fill_(1e9)  # nothing fires: every row decodes to the bias alone
    empty = sparse(x)
    assert not empty.codes.any()
    torch.testing.assert_close(empty.x_hat, sparse.denormalize(sparse.b_dec).expand_as(x), **TOL)


def test_sparse_path_saves_no_batch_by_latents_tensor_for_the_backward(make_sae):
    """The memory target: on the sparse path autograd keeps nothing of size (n, h) between forward and
    backward (the dense path keeps the codes for the decoder weight gradient, which shows the check works)."""
    n = 48  # n * h = 1536 differs from every weight's size (d * h = 256)
    sparse, dense = _pair(make_sae, "topk")
    x = torch.randn(n, sparse.d_in)

    def largest_saved(sae) -> int:
        sizes = []

        def pack(t):
            sizes.append(t.numel())
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            (sae(x).x_hat - x).square().mean()
        return max(sizes)

    assert largest_saved(dense) >= n * sparse.n_latents
    assert largest_saved(sparse) < n * sparse.n_latents


def test_forward_sparse_builds_dense_codes_only_when_read(make_sae, monkeypatch):
    sae = make_sae("topk")
    x = torch.randn(6, sae.d_in)
    built = []
    to_dense = SparseCodes.to_dense
    monkeypatch.setattr(SparseCodes, "to_dense", lambda self: built.append(1) or to_dense(self))
    out = sae.forward_sparse(x)
    assert out.sparse_codes.nonzero_count() > 0 and not built
    assert torch.equal(out.codes, sae.encode(x)) and len(built) == 1


def test_encode_sparse_and_decode_sparse_agree_with_encode_and_decode(make_sae, architecture, prime):
    """Every architecture: the sparse encode-only path gives the dense codes; dense architectures fall back
    to encoding densely and keeping the non-zeros."""
    sae = make_sae(architecture)
    x = torch.randn(3, 4, sae.d_in)
    prime(sae, x)
    with torch.no_grad():
        codes = sae.encode_sparse(x)
        assert torch.equal(codes.to_dense(), sae.encode(x))
        torch.testing.assert_close(sae.decode_sparse(codes), sae.decode(sae.encode(x)), **TOL)
    assert sae.uses_sparse_path == (architecture in ("topk", "batchtopk"))


def test_bfloat16_autocast_sparse_path_matches_dense_path(make_sae):
    """Under bf16 autocast both paths run the encoder matmul in bf16 (so they select the same latents); the
    sparse decoder sums in bf16 in another order, so reconstructions agree to bf16's precision, 2^-8
    relative (3e-2 absolute here: inputs of size ~1 and a handful of terms); gradients stay float32."""
    sparse, dense = _pair(make_sae, "topk")
    x, upstream = torch.randn(16, sparse.d_in), torch.randn(16, sparse.d_in)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        (out_s, grads_s), (out_d, grads_d) = _run(sparse, x, upstream), _run(dense, x, upstream)
    assert out_s.pre_codes.dtype == torch.bfloat16 and torch.equal(out_s.codes != 0, out_d.codes != 0)
    torch.testing.assert_close(out_s.x_hat.float(), out_d.x_hat.float(), rtol=3e-2, atol=3e-2)
    for name, grad in grads_s.items():
        assert grad.dtype == torch.float32, name
        torch.testing.assert_close(grad, grads_d[name], rtol=3e-2, atol=3e-2, msg=name)


# ----------------------------------------------------------------------------------- bad input
def test_inconsistent_sparse_codes_are_rejected_with_the_reason(make_sae):
    sae = make_sae("topk")
    with pytest.raises(ValueError, match="this SAE has 32"):
        sae.decode_sparse(_codes([1.0], [0], [0, 1], n_latents=64))
    with pytest.raises(ValueError, match=r"must lie in \[0, 32\)"):
        sae.decode_sparse(_codes([1.0], [40], [0, 1], n_latents=32))
    with pytest.raises(ValueError, match="offsets must rise from 0 to nnz=2"):
        sae.decode_sparse(_codes([1.0, 2.0], [0, 1], [0, 1], n_latents=32))
    with pytest.raises(ValueError, match="batch_shape"):
        sae.decode_sparse(_codes([1.0], [0], [0, 1], n_latents=32)._replace(batch_shape=(2,)))
    with pytest.raises(ValueError, match=r"\(32, d\) decoder matrix"):
        sparse_decode(_codes([1.0], [0], [0, 1], n_latents=32), torch.zeros(8, 32))
    with pytest.raises(ValueError, match="affine_select needs x"):
        affine_select(torch.zeros(2, 3), None, torch.zeros(4, 5), torch.zeros(5), _top_k_rows(1))


def test_csr_selection_counts_rows_with_no_entries():
    values, indices, offsets = csr_selection(
        torch.tensor([1.0, 2.0]), torch.tensor([0, 2]), torch.tensor([5, 1]), n_rows=4
    )
    assert offsets.tolist() == [0, 1, 1, 2, 2] and indices.tolist() == [5, 1]
