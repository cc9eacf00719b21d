"""MSAE-specific metrics (Zaigrajew et al. 2025; the authors' ``metrics.py``, ``score_topk_sae_embeddings.py``
and ``aligment_metric.py``; msae.md §2, §3.4, §5).

- :func:`normalized_mae_per_sample`: ``mean_d |x - x_hat| / mean_d |x|`` per row (§2.8).
- :func:`decoder_orthogonality`: mean over all ``m x m`` entries of the squared off-diagonal decoder Gram
  matrix, diagonal zeros included in the denominator (§2.8, "DO").
- :func:`full_codes`: the "all"/"full" output every TopK-type model is also evaluated with: ReLU of all
  pre-activations, no TopK (§3.4; capped for a soft-capped Matryoshka SAE).
- :func:`dead_latent_count`: latents never non-zero in the full codes over the evaluation set (§2.5).
- :func:`progressive_topk_sweep`: keep the top ``k`` of the full codes for increasing ``k`` and score each
  reconstruction (§4.7 "progressive recovery"; :func:`authors_sweep_ks` gives their ``16, 32, 64, ..., m``).
- :func:`encoder_alignment`: Hungarian alignment of two seeds' unit encoder columns (§2.9).

Per-row metrics are reported as ``(mean, std)`` over rows, as the authors log them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from saebench.metrics.alignment import DictionaryAlignment, hungarian_alignment
from saebench.metrics.reconstruction import cosine_similarity_per_sample, fvu_per_sample
from saebench.metrics.sparsity import sparsity_fraction
from saebench.metrics.validation import paired_rows
from saebench.sae.base import SAE
from saebench.sae.matryoshka import MatryoshkaSAE, nested_top_k

__all__ = [
    "normalized_mae_per_sample",
    "decoder_orthogonality",
    "full_codes",
    "dead_latent_count",
    "authors_sweep_ks",
    "progressive_topk_sweep",
    "encoder_alignment",
]


def normalized_mae_per_sample(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """``(n,)``: ``mean_d |x_i - x_hat_i| / mean_d |x_i|`` (MSAE ``metrics.py``).

    An all-zero input row is an error."""
    x, x_hat = paired_rows(x, x_hat)
    scale = x.abs().mean(dim=1)
    if (scale == 0).any():
        raise ValueError("normalized MAE is undefined for an all-zero input row")
    return (x - x_hat).abs().mean(dim=1) / scale


def decoder_orthogonality(decoder: torch.Tensor) -> float:
    """``mean_{i,j} ((W W^T) * (1 - I))_{ij}^2`` over all ``m^2`` entries of the Gram matrix of the decoder
    ``W (m, d)``. The rows are not normalised here (the authors' decoder rows are unit-norm after each
    step)."""
    w = decoder.detach().to(torch.float64)
    gram = w @ w.T
    gram.fill_diagonal_(0.0)
    return float(gram.square().mean())


def full_codes(sae: SAE, x: torch.Tensor) -> torch.Tensor:
    """``(n, n_latents)`` "all" codes: ReLU of every pre-activation (a Matryoshka SAE's capped version)."""
    sae.check_input(x)
    pre = sae.pre_activation(x)
    if isinstance(sae, MatryoshkaSAE):
        return sae.full_codes(pre)
    return torch.relu(pre)


def dead_latent_count(codes: torch.Tensor) -> int:
    """Number of latents never non-zero over the rows of ``codes (n, n_latents)`` (MSAE evaluation, §2.5)."""
    return int(((codes != 0).sum(dim=0) == 0).sum())


def authors_sweep_ks(n_latents: int) -> tuple[int, ...]:
    """``16, 32, 64, ...`` doubling while ``<= n_latents``, then ``n_latents``
    (the authors' ``score_topk_sae_embeddings.py``)."""
    ks, k = [], 16
    while k <= n_latents:
        ks.append(k)
        k *= 2
    if not ks or ks[-1] != n_latents:
        ks.append(n_latents)
    return tuple(ks)


def _mean_std(values: torch.Tensor) -> tuple[float, float]:
    std = float(values.std()) if values.numel() > 1 else 0.0
    return float(values.mean()), std


@torch.no_grad()
def progressive_topk_sweep(sae: SAE, x: torch.Tensor, ks: Sequence[int]) -> dict[int, dict[str, object]]:
    """For each ``k``: keep the ``k`` largest of :func:`full_codes`, decode, score against ``x (n, d_in)``.

    Returns ``{k: {"fvu", "mae", "cs": (mean, std) over rows; "sparsity": fraction of zero latents}}``
    (FVU per sample, normalised MAE and cosine, in ``x``'s space as the evaluation scripts compute them).
    """
    full = full_codes(sae, x)
    ks = tuple(int(k) for k in ks)
    if not all(0 < k <= sae.n_latents for k in ks):
        raise ValueError(f"every k must lie in [1, {sae.n_latents}], got {ks}")
    # full codes are >= 0, so top-k then ReLU (nested_top_k) keeps exactly the k largest codes
    results = {}
    for k, codes in zip(ks, nested_top_k(full, ks), strict=True):
        x_hat = sae.decode(codes)
        results[k] = {
            "fvu": _mean_std(fvu_per_sample(x, x_hat)),
            "mae": _mean_std(normalized_mae_per_sample(x, x_hat)),
            "cs": _mean_std(cosine_similarity_per_sample(x, x_hat)),
            "sparsity": sparsity_fraction(codes),
        }
    return results


def encoder_alignment(sae_a: SAE, sae_b: SAE) -> DictionaryAlignment:
    """Hungarian alignment of the encoder columns (as unit vectors) of two SAEs; ``.mean_cosine`` is MSAE's
    seed-alignment score (after Paulo & Belrose 2025, arXiv 2501.16615)."""
    return hungarian_alignment(sae_a.encoder_weight.detach().T, sae_b.encoder_weight.detach().T)
