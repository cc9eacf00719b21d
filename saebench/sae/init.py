"""Data-dependent initialisation helpers for SAEs.

:func:`geometric_median` initialises the decoder bias ``b_dec`` (Bricken et al. 2023, "Towards
Monosemanticity", § "Training the SAE"; PatchSAE, Lim et al. 2025, App. A.1 / Table 2), through
:meth:`SAE.init_decoder_bias`. :func:`image_geometric_median` is PatchSAE's image-level variant.
"""

from __future__ import annotations

import torch

__all__ = ["geometric_median", "image_geometric_median", "kaiming_uniform_encoder_"]


def geometric_median(points: torch.Tensor, max_iter: int = 100, tol: float = 1e-6) -> torch.Tensor:
    """The geometric median of ``points`` ``(n, d)``: the ``(d,)`` point minimising ``sum_i ||x_i - y||``.

    Weiszfeld's iteration ``y <- sum_i w_i x_i / sum_i w_i`` with ``w_i = 1 / ||x_i - y||``, started from the
    coordinate mean, with the modification of Vardi & Zhang (2000, "The multivariate L1-median and associated
    data depth", PNAS 97(4)) for an estimate that coincides with data points: with ``eta`` points at ``y``
    and ``r = ||sum_{x_i != y} w_i (x_i - y)||``, ``y`` is the median when ``r <= eta``; otherwise the step is
    ``y <- (1 - eta/r) T(y) + (eta/r) y``, ``T`` the Weiszfeld map over the other points. So no weight is
    ever ``1/0``.

    Stops after ``max_iter`` steps or when a step moves less than ``tol`` times the mean distance from the
    points to the estimate (a scale-free criterion). Half-precision inputs are processed in float32; the
    result has the input's dtype.
    """
    if points.ndim != 2 or points.shape[0] == 0:
        raise ValueError(
            f"geometric_median needs a non-empty (n, d) tensor of points, got shape {tuple(points.shape)}"
        )
    if not torch.isfinite(points).all():
        raise ValueError("geometric_median: points contain NaN/Inf values; drop or clean those rows first")
    if max_iter < 1 or tol <= 0:
        raise ValueError(f"geometric_median needs max_iter >= 1 and tol > 0, got {max_iter=}, {tol=}")
    work = points.float() if points.dtype in (torch.float16, torch.bfloat16) else points
    coincidence_tol = torch.finfo(work.dtype).eps
    y = work.mean(dim=0)
    for _ in range(max_iter):
        dist = torch.linalg.vector_norm(work - y, dim=1)
        coincident = dist <= coincidence_tol * dist.max()
        weights = torch.where(coincident, torch.zeros_like(dist), 1.0 / dist)
        total = weights.sum()
        if total == 0:  # every point sits at y
            break
        weiszfeld = (weights @ work) / total
        n_coincident = int(coincident.sum())
        if n_coincident == 0:
            y_next = weiszfeld
        else:
            # ||sum_{x_i != y} w_i (x_i - y)|| = total * ||T(y) - y||
            r = float(total * torch.linalg.vector_norm(weiszfeld - y))
            if r <= n_coincident:
                break
            y_next = (1.0 - n_coincident / r) * weiszfeld + (n_coincident / r) * y
        step = float(torch.linalg.vector_norm(y_next - y))
        y = y_next
        if step <= tol * float(dist.mean()):
            break
    return y.to(points.dtype)


def image_geometric_median(acts: torch.Tensor, max_iter: int = 100, tol: float = 1e-6) -> torch.Tensor:
    """PatchSAE's decoder-bias init: the token mean of the image-wise geometric median, ``(n, T, d) -> (d,)``.

    The authors' code (``sparse_autoencoder.py`` with the ``geom_median`` package, ``per_component=False``,
    maxiter 100; patchsae.md §1.2) treats each image's ``T x d`` token matrix as one point, so the Weiszfeld
    median (Frobenius distance) is a ``(T, d)`` matrix; it then averages that over the ``T`` tokens. The plain
    variant, the geometric median of the ``n * T`` token rows, is
    ``geometric_median(acts.reshape(-1, d))`` (``SAE.init_decoder_bias(..., "geometric_median")``).
    """
    if acts.ndim != 3:
        raise ValueError(
            f"image_geometric_median needs (n_images, n_tokens, d) activations, got shape {tuple(acts.shape)}"
        )
    n_images, n_tokens, d = acts.shape
    median = geometric_median(acts.reshape(n_images, n_tokens * d), max_iter=max_iter, tol=tol)
    return median.reshape(n_tokens, d).mean(dim=0)


@torch.no_grad()
def kaiming_uniform_encoder_(sae) -> None:
    """Re-initialise ``sae.W_enc`` ``(d_in, n_latents)`` in place as the PatchSAE authors do (patchsae.md
    §1.2): ``torch.nn.init.kaiming_uniform_`` on the ``(d_in, n_latents)`` tensor, so ``fan_in = n_latents``
    and the entries are uniform in ``±sqrt(6 / n_latents)``.

    Small encoder weights keep the first reconstructions small; saebench's default (``W_enc = W_dec^T`` with
    unit-norm atoms) sums thousands of unit atoms at the start and, at expansion 64 with the PatchSAE recipe,
    had not recovered after 150 steps (mini tier, NOTES.md). Tied SAEs have no separate encoder: refused.
    """
    if sae.config.tied:
        raise ValueError("kaiming_uniform_encoder_: a tied SAE has no separate encoder weight to initialise")
    torch.nn.init.kaiming_uniform_(sae.W_enc)
