"""TopK (Gao et al. 2024) and BatchTopK (Bussmann et al. 2024) SAEs: sparsity by keeping the largest
activations.

Both keep the largest *pre-activations* and apply ReLU to the kept values only. This gives exactly the codes
of overcomplete's ``TopKSAE``/``BatchTopKSAE``, which apply ReLU to every pre-activation first and then keep
the largest: ReLU is monotone, so the kept set is the same up to ties among values that are 0 after ReLU, and
those contribute 0 either way. Taking top-k first saves a full ``(batch, n_latents)`` ReLU pass.

Both implement :meth:`~saebench.sae.base.SAE.select_latents`, so their forward and backward passes take the
sparse path of :mod:`saebench.sae.sparse_decode` (decoder and encoder gradients over the active latents only);
:func:`keep_top_k` / ``activation`` remain the dense definition that the sparse path is tested against.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from saebench.sae.base import SAE, SAEConfig, register_sae
from saebench.sae.sparse_decode import Selection, csr_selection, row_selection

__all__ = ["TopKSAEConfig", "TopKSAE", "BatchTopKSAEConfig", "BatchTopKSAE", "keep_top_k"]


def _check_k(k: int, n_latents: int) -> None:
    if isinstance(k, bool) or not isinstance(k, int):
        raise TypeError(f"k must be an int, got {k!r} ({type(k).__name__})")
    if not 0 < k <= n_latents:
        raise ValueError(
            f"k must satisfy 0 < k <= n_latents, got k={k} with n_latents={n_latents}; "
            "choose a smaller k or a larger dictionary"
        )


def keep_top_k(values: torch.Tensor, k: int, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero all but the ``k`` largest entries of ``values`` along ``dim`` and apply ReLU to the kept ones.

    Returns ``(codes, kept)``: ``codes`` has the shape of ``values``; ``kept`` holds the ``k`` kept values
    after ReLU along ``dim`` (unsorted). Gradients flow to the kept entries only (``topk`` + ``scatter``).
    """
    kept, indices = values.topk(k, dim=dim, sorted=False)
    kept = torch.relu(kept)
    return torch.zeros_like(values).scatter_(dim, indices, kept), kept


@dataclass(frozen=True)
class TopKSAEConfig(SAEConfig):
    """Configuration of :class:`TopKSAE`. ``k``: active latents per row (required, ``0 < k <= n_latents``)."""

    k: int = field(kw_only=True)

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_k(self.k, self.n_latents)


@register_sae("topk")
class TopKSAE(SAE):
    """TopK SAE (Gao et al. 2024, "Scaling and evaluating sparse autoencoders", §2.3).

    ``codes = scatter(topk(pre, k).indices, relu(topk(pre, k).values))`` per row: at most ``k`` non-zeros per
    row (fewer when fewer than ``k`` pre-activations are positive). ``(..., n_latents) -> (..., n_latents)``.
    Same codes as overcomplete's ``TopKSAE`` (which takes ReLU first, then top-k; see the module docstring).
    """

    config_class = TopKSAEConfig

    def activation(self, pre_codes: torch.Tensor) -> torch.Tensor:
        return keep_top_k(pre_codes, self.config.k, dim=-1)[0]

    def select_latents(self, pre_codes: torch.Tensor) -> Selection:
        """The ``k`` largest pre-activations of every row (the entries :meth:`activation` keeps)."""
        values, indices = pre_codes.topk(self.config.k, dim=-1, sorted=False)
        return row_selection(values, indices)


@dataclass(frozen=True)
class BatchTopKSAEConfig(SAEConfig):
    """Configuration of :class:`BatchTopKSAE`.

    k: mean number of active latents per row; a batch of ``B`` rows keeps its ``k * B`` largest activations
        (required, ``0 < k <= n_latents``).
    threshold_momentum: momentum ``m`` of the running inference threshold (``0 <= m < 1``; overcomplete's
        default 0.9).
    """

    k: int = field(kw_only=True)
    threshold_momentum: float = 0.9

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_k(self.k, self.n_latents)
        if not (math.isfinite(self.threshold_momentum) and 0.0 <= self.threshold_momentum < 1.0):
            raise ValueError(f"threshold_momentum must be in [0, 1), got {self.threshold_momentum}")


@register_sae("batchtopk")
class BatchTopKSAE(SAE):
    """BatchTopK SAE (Bussmann, Leask & Nanda 2024, "BatchTopK Sparse Autoencoders", arXiv:2412.06410).

    Training mode: flatten the ``B`` rows of the batch (every leading dimension counts as rows) and keep the
    ``k * B`` largest pre-activations, ReLU applied (:func:`keep_top_k`), so rows get a variable number of
    latents averaging at most ``k``. Each training forward pass also updates the running threshold buffer
    ``threshold`` from ``t``, the smallest kept value after ReLU (the ``k*B``-th largest activation):
    ``threshold = t`` on the first update, then ``threshold <- m * threshold + (1 - m) * t`` with
    ``m = threshold_momentum``. This is overcomplete's ``BatchTopKSAE`` rule (``batchtopk_sae.py``), kept for
    parity; the paper instead averages the minimum positive kept activation over batches (§3).

    Eval mode: ``codes = relu(pre)`` where ``relu(pre) >= threshold``, else 0 (``>=`` because the ``k*B``-th
    value itself is kept in training; overcomplete's rule too). The threshold starts as NaN ("not estimated");
    eval before any training forward pass is an error. It is a buffer, so it is saved with the weights.
    """

    config_class = BatchTopKSAEConfig

    def __init__(self, config: BatchTopKSAEConfig):
        super().__init__(config)
        self.register_buffer("threshold", torch.tensor(float("nan")))

    def activation(self, pre_codes: torch.Tensor) -> torch.Tensor:
        if self.training:
            return self._batch_top_k(pre_codes)
        self._check_threshold()
        # threshold >= 0 (it is a ReLU output), so pre >= threshold also drops every pre < 0
        return pre_codes.masked_fill(pre_codes < self.threshold, 0.0)

    def select_latents(self, pre_codes: torch.Tensor) -> Selection:
        """Training mode: the ``k * n`` largest entries of the ``(n, n_latents)`` batch (and the threshold
        update of :meth:`activation`); eval mode: the entries ``>= threshold``."""
        n_rows, h = pre_codes.shape
        if self.training:
            if n_rows == 0:
                raise ValueError("BatchTopKSAE needs at least one row per training batch")
            kept, flat = pre_codes.reshape(-1).topk(self.config.k * n_rows, sorted=False)
            flat, order = flat.sort()
            kept = kept[order]
            self._update_threshold(torch.relu(kept).min())
            return csr_selection(kept, flat // h, flat % h, n_rows)
        self._check_threshold()
        rows, indices = (pre_codes >= self.threshold).nonzero(as_tuple=True)
        return csr_selection(pre_codes[rows, indices], rows, indices, n_rows)

    def _check_threshold(self) -> None:
        if torch.isnan(self.threshold):
            raise RuntimeError(
                "BatchTopKSAE has no inference threshold yet: run training-mode forward passes first "
                "(the threshold is estimated during training) or set sae.threshold"
            )

    def _batch_top_k(self, pre_codes: torch.Tensor) -> torch.Tensor:
        n_rows = pre_codes.numel() // self.n_latents
        if n_rows == 0:
            raise ValueError("BatchTopKSAE needs at least one row per training batch")
        codes, kept = keep_top_k(pre_codes.reshape(-1), self.config.k * n_rows, dim=0)
        self._update_threshold(kept.min())
        return codes.view(pre_codes.shape)

    @torch.no_grad()
    def _update_threshold(self, batch_threshold: torch.Tensor) -> None:
        m = self.config.threshold_momentum
        t = batch_threshold.detach().to(self.threshold.dtype)
        self.threshold.copy_(torch.where(torch.isnan(self.threshold), t, m * self.threshold + (1.0 - m) * t))
