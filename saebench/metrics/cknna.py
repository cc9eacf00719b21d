"""CKNNA: Centered Kernel Nearest-Neighbour Alignment (Huh et al. 2024, "The Platonic Representation
Hypothesis", §A; their ``platonic-rep`` ``metrics.py``), as MSAE uses it (msae.md §2.6).

For two representations ``A (n, d_a)`` and ``B (n, d_b)`` of the same ``n`` samples::

    K = A A^T, L = B B^T                                  # linear kernels, (n, n)
    M = knn(K) * knn(L)                                   # mutual k-nearest-neighbour mask, diagonal excluded
    s(K, L) = HSIC_u(M * K, M * L)                        # unbiased HSIC (Song et al. 2012, Eq. 5)
    CKNNA = s(K, L) / (sqrt(s(K, K) * s(L, L)) + 1e-6)

``knn(K)[i, j] = 1`` when ``j`` is among the ``k`` largest entries of row ``i`` of ``K`` with the diagonal set
to ``-inf``. For ``s(K, K)`` both masks are ``knn(K)``. MSAE's evaluation scripts score inputs vs **latent
codes** in batches of 10,000 shuffled with seed 42, skipping a final partial batch
(:func:`cknna_batched`); their ``train.py`` scores reconstruction vs input per batch.
"""

from __future__ import annotations

import torch

from saebench.metrics.validation import as_rows

__all__ = [
    "MSAE_CKNNA_TOPK",
    "MSAE_CKNNA_BATCH",
    "MSAE_CKNNA_SHUFFLE_SEED",
    "hsic_unbiased",
    "knn_mask",
    "cknna",
    "cknna_batched",
]

#: Neighbours per row (platonic-rep default used by MSAE, msae.md §2.6).
MSAE_CKNNA_TOPK = 10
#: Rows per CKNNA batch in MSAE's evaluation scripts.
MSAE_CKNNA_BATCH = 10_000
#: Seed of the shuffle before batching in MSAE's evaluation scripts.
MSAE_CKNNA_SHUFFLE_SEED = 42
#: Added to the normaliser, as platonic-rep.
_EPS = 1e-6


def hsic_unbiased(K: torch.Tensor, L: torch.Tensor) -> torch.Tensor:
    """Unbiased HSIC estimator (Song et al. 2012, Eq. 5) of two ``(n, n)`` kernels, ``n >= 4``::

        [tr(K~ L~) + 1^T K~ 1 * 1^T L~ 1 / ((n-1)(n-2)) - 2/(n-2) 1^T K~ L~ 1] / (n (n-3))

    with ``K~``, ``L~`` the kernels with zeroed diagonals. Returns a scalar tensor.
    """
    n = K.shape[0]
    if n < 4:
        raise ValueError(f"the unbiased HSIC needs at least 4 samples, got {n}")
    K0 = K.clone().fill_diagonal_(0)
    L0 = L.clone().fill_diagonal_(0)
    value = (K0 * L0.T).sum() + K0.sum() * L0.sum() / ((n - 1) * (n - 2)) - 2 * (K0 @ L0).sum() / (n - 2)
    return value / (n * (n - 3))


def knn_mask(K: torch.Tensor, topk: int) -> torch.Tensor:
    """``(n, n)`` 0/1 mask of each row's ``topk`` largest off-diagonal kernel entries."""
    n = K.shape[0]
    if not 0 < topk < n:
        raise ValueError(f"topk must lie in [1, n-1] = [1, {n - 1}], got {topk}")
    masked = K.clone().fill_diagonal_(float("-inf"))
    indices = masked.topk(topk, dim=1).indices
    return torch.zeros_like(K).scatter_(1, indices, 1.0)


def _mutual_knn_hsic(K: torch.Tensor, L: torch.Tensor, mask_k: torch.Tensor, mask_l: torch.Tensor) -> float:
    mask = mask_k * mask_l
    return float(hsic_unbiased(mask * K, mask * L))


def cknna(a: torch.Tensor, b: torch.Tensor, topk: int = MSAE_CKNNA_TOPK) -> float:
    """CKNNA between ``a (n, d_a)`` and ``b (n, d_b)`` (rows are the same samples); see the module docstring.

    1 for representations with the same linear kernel (e.g. ``b = a @ Q``, ``Q`` orthogonal).
    """
    a, b = as_rows(a, "a"), as_rows(b, "b")
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"a and b must describe the same samples, got {a.shape[0]} and {b.shape[0]} rows")
    K, L = a @ a.T, b @ b.T
    mask_k, mask_l = knn_mask(K, topk), knn_mask(L, topk)
    kl = _mutual_knn_hsic(K, L, mask_k, mask_l)
    kk = _mutual_knn_hsic(K, K, mask_k, mask_k)
    ll = _mutual_knn_hsic(L, L, mask_l, mask_l)
    return kl / ((kk * ll) ** 0.5 + _EPS)


def cknna_batched(
    a: torch.Tensor,
    b: torch.Tensor,
    batch_size: int = MSAE_CKNNA_BATCH,
    topk: int = MSAE_CKNNA_TOPK,
    seed: int = MSAE_CKNNA_SHUFFLE_SEED,
) -> tuple[float, float]:
    """``(mean, std)`` of :func:`cknna` over batches of ``batch_size`` rows after a seeded shuffle
    (``torch.randperm`` with a ``torch.Generator`` seeded ``seed``); a final partial batch is skipped
    (MSAE ``extract_sae_embeddings.py``). The std is the unbiased one, 0 for a single batch."""
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"a and b must describe the same samples, got {a.shape[0]} and {b.shape[0]} rows")
    n_batches = a.shape[0] // batch_size
    if n_batches == 0:
        raise ValueError(f"need at least batch_size={batch_size} rows for one CKNNA batch, got {a.shape[0]}")
    order = torch.randperm(a.shape[0], generator=torch.Generator().manual_seed(seed))
    scores = torch.tensor(
        [cknna(a[idx], b[idx], topk) for idx in order[: n_batches * batch_size].view(n_batches, batch_size)],
        dtype=torch.float64,
    )
    std = float(scores.std()) if n_batches > 1 else 0.0
    return float(scores.mean()), std
