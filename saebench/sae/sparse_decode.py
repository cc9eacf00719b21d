"""Sparse codes of the TopK family, and a decoder and an encoder whose backward touch only the active latents.

A TopK-family SAE (TopK, BatchTopK, and any later architecture whose codes are ReLU of a *selected* set of
pre-activations: Matryoshka, the USAE's TopK encoders) keeps a few latents per row. Its codes are stored as
:class:`SparseCodes`, rows in CSR form, and two autograd functions use them:

- :func:`sparse_decode` -- ``x_hat_n = codes @ W_dec`` without the dense ``(n, h)`` codes. Forward: an
  embedding-bag sum of the active decoder rows. Backward: ``grad_values[e] = grad_out[row(e)] .
  W_dec[idx(e)]`` (a sampled dense-dense product) and ``grad_W_dec = codes^T @ grad_out`` (sparse-dense).
- :func:`affine_select` -- ``pre = (x_n - b_dec) @ W_enc + b_enc`` (dense: every pre-activation is needed to
  find the largest) followed by the architecture's selection. Its backward uses only the gradient of the
  selected entries: ``grad_W_enc = x_c^T @ G``, ``grad_b_enc = colsum(G)`` and
  ``grad_b_dec = -W_enc @ colsum(G)`` with ``G`` the sparse ``(n, h)`` gradient, so no ``(n, h)`` tensor is
  made. A gradient that reaches the dense ``pre`` output (AuxK on dead latents, ghost grads, a loss on
  pre-activations) is added with the dense matmuls.

Work of one training step per row, in multiply-adds (``d = d_in``, ``h = n_latents``, ``k`` active latents):

==================================  ==========  ===========
                                    dense path  sparse path
==================================  ==========  ===========
encoder forward                     ``d h``     ``d h``
decoder forward                     ``h d``     ``k d``
grad w.r.t. the codes               ``h d``     ``k d``
decoder weight gradient             ``h d``     ``k d``
encoder weight gradient             ``d h``     ``k d``
grad w.r.t. the encoder input       ``d h``     ``h d / n`` (``b_dec`` only: one mat-vec per batch)
==================================  ==========  ===========

Nothing of size ``(n, h)`` is saved for the backward: the encoder saves the centred input ``(n, d)``, the
decoder the codes ``(nnz,)``, both the weights they already hold.

Sources: the decomposition of both backward passes is the one of openai/sparse_autoencoder (Gao et al. 2024,
"Scaling and evaluating sparse autoencoders"): ``kernels.py`` (``TritonDecoderAutograd``: sparse-dense,
sparse-transpose-dense and dense-dense-sparse-output products) and ``train.py`` (``EncWrapper``: the encoder
weight gradient from the top-k gradients, the pre-bias gradient as ``-(grad_sum @ W)``). Here the kernels
are torch's CPU/GPU primitives (``embedding_bag``, ``sparse.mm``, ``sparse.sampled_addmm``): no Triton.

Precision: under ``torch.autocast`` the forward products run in the autocast dtype (as a dense matmul would);
the sparse gradient accumulations always run in float32 and are returned in each input's dtype, so float32
master weights get float32 gradients.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F

__all__ = [
    "SparseCodes",
    "Selection",
    "row_selection",
    "csr_selection",
    "sparse_decode",
    "affine_select",
    "sparse_latent_totals",
]

Selection = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
"""What a selection rule returns for ``(n, h)`` pre-activations: ``(values, indices, offsets)``, the selected
pre-activations ``(nnz,)``, their latent indices ``(nnz,)`` int64 (ascending within each row) and the row
offsets ``(n + 1,)`` int64 (row ``r`` holds entries ``offsets[r]:offsets[r + 1]``)."""


class SparseCodes(NamedTuple):
    """Codes with few non-zeros per row, rows in CSR form.

    values:      ``(nnz,)`` code values (for the TopK family: ReLU of the selected pre-activations, so some
                 may be 0 when fewer than ``k`` pre-activations are positive).
    indices:     ``(nnz,)`` int64 latent index of each value, ascending within each row.
    offsets:     ``(n_rows + 1,)`` int64; row ``r`` holds entries ``offsets[r]:offsets[r + 1]``.
    n_latents:   ``h``, the width of the dense codes.
    batch_shape: the leading shape of the input (``n_rows`` is its product); dense codes are
                 ``(*batch_shape, n_latents)``.
    """

    values: torch.Tensor
    indices: torch.Tensor
    offsets: torch.Tensor
    n_latents: int
    batch_shape: tuple[int, ...]

    @property
    def n_rows(self) -> int:
        return self.offsets.shape[0] - 1

    def row_ids(self) -> torch.Tensor:
        """``(nnz,)`` int64: the row of every stored entry."""
        return _row_ids(self.offsets, self.indices.shape[0])

    def to_dense(self) -> torch.Tensor:
        """``(*batch_shape, n_latents)`` dense codes; differentiable with respect to ``values`` (the
        backward gathers, so no ``(n, h)`` tensor is saved for it)."""
        flat = self.values.new_zeros(self.n_rows * self.n_latents)
        flat.index_put_((self.row_ids() * self.n_latents + self.indices,), self.values)
        return flat.view(*self.batch_shape, self.n_latents)

    @classmethod
    def from_dense(cls, codes: torch.Tensor) -> SparseCodes:
        """The non-zero entries of dense ``(..., n_latents)`` codes (differentiable in ``codes``)."""
        if codes.ndim == 0:
            raise ValueError("SparseCodes.from_dense needs codes of shape (..., n_latents), got a scalar")
        rows = codes.reshape(-1, codes.shape[-1])
        row, col = rows.nonzero(as_tuple=True)
        selection = csr_selection(rows[row, col], row, col, rows.shape[0])
        return cls(*selection, codes.shape[-1], tuple(codes.shape[:-1]))

    def check(self) -> None:
        """Raise ``ValueError`` if the fields are inconsistent (shapes, index range, offsets)."""
        nnz = self.values.shape[0]
        if self.values.ndim != 1 or self.indices.shape != (nnz,) or self.offsets.ndim != 1:
            raise ValueError(
                f"SparseCodes needs 1-D values and indices of one length and 1-D offsets, got values "
                f"{tuple(self.values.shape)}, indices {tuple(self.indices.shape)}, offsets "
                f"{tuple(self.offsets.shape)}"
            )
        if math.prod(self.batch_shape) != self.n_rows:
            raise ValueError(
                f"batch_shape {self.batch_shape} does not hold the {self.n_rows} rows of offsets"
            )
        if int(self.offsets[0]) != 0 or int(self.offsets[-1]) != nnz or bool((self.offsets.diff() < 0).any()):
            raise ValueError(f"offsets must rise from 0 to nnz={nnz}, got {self.offsets.tolist()[:8]}...")
        if nnz and (int(self.indices.min()) < 0 or int(self.indices.max()) >= self.n_latents):
            raise ValueError(f"latent indices must lie in [0, {self.n_latents}), the dictionary size")

    # ------------------------------------------------------------------ statistics
    def nonzero_count(self) -> int:
        """Number of non-zero codes (stored entries whose value is 0 do not count)."""
        return int(torch.count_nonzero(self.values))

    def firing_counts(self, threshold: float = 0.0) -> torch.Tensor:
        """``(n_latents,)`` int64: rows on which each latent's code satisfies ``|z| > threshold``."""
        fired = self.indices[self.values.detach().abs() > threshold]
        return torch.bincount(fired, minlength=self.n_latents)


def row_selection(values: torch.Tensor, indices: torch.Tensor) -> Selection:
    """The :data:`Selection` of ``k`` entries in every row, from ``(n, k)`` values and latent indices in any
    order within a row (e.g. ``torch.topk(..., sorted=False)``); entries are re-ordered so indices ascend."""
    indices, order = indices.sort(dim=-1)
    values = values.gather(-1, order)
    n, k = indices.shape
    offsets = torch.arange(0, n * k + 1, k, dtype=torch.long, device=indices.device)
    return values.reshape(-1), indices.reshape(-1), offsets


def csr_selection(values: torch.Tensor, rows: torch.Tensor, indices: torch.Tensor, n_rows: int) -> Selection:
    """The :data:`Selection` of entries given in row-major order as ``(nnz,)`` values, rows and latent indices
    (e.g. from ``nonzero()``, or flat indices sorted ascending); rows may hold any number of entries."""
    offsets = torch.zeros(n_rows + 1, dtype=torch.long, device=rows.device)
    torch.cumsum(torch.bincount(rows, minlength=n_rows), 0, out=offsets[1:])
    return values, indices, offsets


def sparse_latent_totals(
    codes: SparseCodes, threshold: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """The sums a streaming latent-statistics window needs, from sparse codes without densifying them:
    ``(firing_counts (h,) int64 of |z| > threshold, activation_sums (h,) float64, zero_count)``, the same
    values ``LatentStatsAccumulator.update`` computes from the dense ``(n, h)`` codes."""
    values = codes.values.detach()
    sums = torch.zeros(codes.n_latents, dtype=torch.float64, device=values.device)
    sums.index_add_(0, codes.indices, values.to(torch.float64))
    zeros = codes.n_rows * codes.n_latents - codes.nonzero_count()
    return codes.firing_counts(threshold), sums, zeros


# ---------------------------------------------------------------------------- kernels
def _row_ids(offsets: torch.Tensor, nnz: int) -> torch.Tensor:
    """``(nnz,)`` int64: the row of every entry of a CSR matrix with row ``offsets`` ``(n + 1,)``."""
    return torch.repeat_interleave(offsets.diff(), output_size=nnz)


def _compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """The dtype a matmul of ``tensors`` runs in: the autocast dtype when autocast is on for their device,
    else their promoted dtype."""
    device_type = tensors[0].device.type
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    dtype = tensors[0].dtype
    for t in tensors[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    return dtype


def _bag_sum(
    indices: torch.Tensor, offsets: torch.Tensor, weights: torch.Tensor, table: torch.Tensor
) -> torch.Tensor:
    """``(n, d)``: row ``r`` sums ``weights[e] * table[indices[e]]`` over its entries (``table`` is
    ``(h, d)``)."""
    return F.embedding_bag(
        indices, table, offsets, mode="sum", per_sample_weights=weights, include_last_offset=True
    )


# The two products that build torch sparse tensors are registered as custom operators (with shape-only "fake"
# implementations), so torch.compile treats them as opaque kernels instead of breaking the graph around them.
@torch.library.custom_op("saebench::scatter_rows", mutates_args=())
def _scatter_rows(
    indices: torch.Tensor, row_ids: torch.Tensor, weights: torch.Tensor, source: torch.Tensor, n_out: int
) -> torch.Tensor:
    """``(n_out, d)`` float32 ``S^T @ source`` for the sparse ``(n, n_out)`` matrix ``S`` with entries
    ``weights`` at ``(row_ids, indices)``: row ``j`` sums ``weights[e] * source[row_ids[e]]`` over the entries
    with ``indices[e] == j``."""
    transposed = torch.sparse_coo_tensor(
        torch.stack([indices, row_ids]),
        weights.float(),
        (n_out, source.shape[0]),
        check_invariants=False,
    ).coalesce()
    return torch.sparse.mm(transposed, source.float().contiguous())


@_scatter_rows.register_fake
def _(indices, row_ids, weights, source, n_out):
    return source.new_empty(n_out, source.shape[1], dtype=torch.float32)


@torch.library.custom_op("saebench::sampled_dots", mutates_args=())
def _sampled_dots(
    indices: torch.Tensor, offsets: torch.Tensor, left: torch.Tensor, right: torch.Tensor
) -> torch.Tensor:
    """``(nnz,)`` float32: entry ``e`` in row ``r`` is ``left[r] . right[indices[e]]`` -- the entries of
    ``left @ right^T`` at the sparse pattern only (``left`` ``(n, d)``, ``right`` ``(h, d)``)."""
    left = left.float().contiguous()
    with warnings.catch_warnings():  # torch warns once that CSR support is "beta"; these two ops are covered
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        pattern = torch.sparse_csr_tensor(
            offsets,
            indices,
            left.new_zeros(indices.shape[0]),
            (left.shape[0], right.shape[0]),
            check_invariants=False,
        )
    return torch.sparse.sampled_addmm(pattern, left, right.float().t(), beta=0.0).values().clone()


@_sampled_dots.register_fake
def _(indices, offsets, left, right):
    return left.new_empty(indices.shape[0], dtype=torch.float32)


# ---------------------------------------------------------------------------- decoder
class _SparseDecode(torch.autograd.Function):
    """``(n, d) = S @ weight`` for the sparse ``(n, h)`` codes ``S`` given as (values, indices, offsets)."""

    @staticmethod
    def forward(ctx, values, indices, offsets, weight):
        dtype = _compute_dtype(values, weight)
        with torch.autocast(weight.device.type, enabled=False):
            out = _bag_sum(indices, offsets, values.to(dtype), weight.to(dtype))
        ctx.save_for_backward(values, indices, offsets, weight)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        values, indices, offsets, weight = ctx.saved_tensors
        grad_values = grad_weight = None
        with torch.autocast(weight.device.type, enabled=False):
            if ctx.needs_input_grad[0]:
                grad_values = _sampled_dots(indices, offsets, grad_out, weight).to(values.dtype)
            if ctx.needs_input_grad[3]:
                row_ids = _row_ids(offsets, indices.shape[0])
                grad_weight = _scatter_rows(indices, row_ids, values, grad_out, weight.shape[0])
                grad_weight = grad_weight.to(weight.dtype)
        return grad_values, None, None, grad_weight


def sparse_decode(codes: SparseCodes, weight: torch.Tensor) -> torch.Tensor:
    """``codes @ weight`` for sparse codes and a ``(n_latents, d)`` decoder matrix: ``(n_rows, d)``.

    Equal to ``codes.to_dense().reshape(-1, h) @ weight`` up to float summation order, with gradients for
    ``codes.values`` and ``weight`` computed from the active entries only (see the module docstring).
    """
    if weight.ndim != 2 or weight.shape[0] != codes.n_latents:
        raise ValueError(
            f"sparse_decode needs a ({codes.n_latents}, d) decoder matrix for codes over {codes.n_latents} "
            f"latents, got {tuple(weight.shape)}"
        )
    return _SparseDecode.apply(codes.values, codes.indices, codes.offsets, weight)


# ---------------------------------------------------------------------------- encoder
class _AffineSelect(torch.autograd.Function):
    """``pre = (x - centre) @ weight + bias`` and the selection of its active entries (see
    :func:`affine_select`); the backward is sparse in the selected entries, dense only for a gradient that
    reaches ``pre`` itself."""

    @staticmethod
    def forward(ctx, x, centre, weight, bias, select):
        ctx.set_materialize_grads(False)
        dtype = _compute_dtype(x, weight)
        with torch.autocast(x.device.type, enabled=False):
            centred = x if centre is None else x - centre
            pre = torch.addmm(bias.to(dtype), centred.to(dtype), weight.to(dtype))
            values, indices, offsets = select(pre)
        ctx.mark_non_differentiable(indices, offsets)
        ctx.save_for_backward(centred, weight, indices, offsets)
        return pre, values, indices, offsets

    @staticmethod
    def backward(ctx, grad_pre, grad_values, _grad_indices, _grad_offsets):
        centred, weight, indices, offsets = ctx.saved_tensors
        needs_x, needs_centre, needs_weight, needs_bias = ctx.needs_input_grad[:4]
        h = weight.shape[1]
        grad_x = grad_weight = grad_bias = None
        with torch.autocast(centred.device.type, enabled=False):
            column_sums = torch.zeros(h, dtype=torch.float32, device=weight.device)
            if grad_values is not None:
                column_sums.index_add_(0, indices, grad_values.float())
                if needs_weight:
                    row_ids = _row_ids(offsets, indices.shape[0])
                    grad_weight = _scatter_rows(indices, row_ids, grad_values, centred, h).t()
                if needs_x:
                    grad_x = _bag_sum(indices, offsets, grad_values.float(), weight.float().t().contiguous())
            if grad_pre is not None:  # dense products in the gradient's dtype, like an autocast matmul's
                column_sums += grad_pre.sum(dim=0, dtype=torch.float32)
                if needs_weight:
                    dense_weight = (centred.to(grad_pre.dtype).t() @ grad_pre).float()
                    grad_weight = dense_weight if grad_weight is None else grad_weight + dense_weight
                if needs_x:
                    dense_x = (grad_pre @ weight.to(grad_pre.dtype).t()).float()
                    grad_x = dense_x if grad_x is None else grad_x + dense_x
            if needs_bias:
                grad_bias = column_sums
            grad_centre = -(weight.float() @ column_sums) if needs_centre else None
        return (
            _cast(grad_x, centred),
            _cast(grad_centre, weight),
            _cast(grad_weight, weight),
            _cast(grad_bias, weight),
            None,
        )


def _cast(grad: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor | None:
    return None if grad is None else grad.to(like.dtype)


def affine_select(
    x: torch.Tensor,
    centre: torch.Tensor | None,
    weight: torch.Tensor,
    bias: torch.Tensor,
    select: Callable[[torch.Tensor], Selection],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Encoder pre-activations and the active entries chosen by ``select``, with a sparse backward.

    x: ``(n, d)`` normalised inputs. centre: ``(d,)`` subtracted first (the pre-encoder bias ``b_dec``) or
    ``None``. weight: ``(d, h)``. bias: ``(h,)``. select: ``(n, h)`` pre-activations -> :data:`Selection`,
    called once, without gradient tracking.

    Returns ``(pre (n, h), values (nnz,), indices (nnz,), offsets (n + 1,))``: ``pre = (x - centre) @ weight
    + bias`` and the selected pre-activations. Gradients reach ``x``, ``centre``, ``weight`` and ``bias``
    through ``values`` (sparse work, see the module docstring) and through ``pre`` when it is used
    downstream (dense work).
    """
    if x.ndim != 2 or weight.ndim != 2 or x.shape[1] != weight.shape[0] or bias.shape != (weight.shape[1],):
        raise ValueError(
            f"affine_select needs x (n, d), weight (d, h), bias (h,); got {tuple(x.shape)}, "
            f"{tuple(weight.shape)}, {tuple(bias.shape)}"
        )
    return _AffineSelect.apply(x, centre, weight, bias, select)
