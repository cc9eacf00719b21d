"""Relaxed Archetypal SAE (RA-SAE; Fel et al. 2025, "Archetypal SAE", arXiv:2502.12892, §3 eq. 4).

Dictionary atoms are convex combinations of candidate points ``C`` (``(n_candidates, d_in)``, k-means
centroids of the data, :func:`kmeans_candidates`; README ``--n-arch-clusters``) plus a bounded relaxation::

    W_dec = (W @ C + Relax) * exp(multiplier)
    W     (n_latents, n_candidates)  rows on the simplex (non-negative, sum 1)
    Relax (n_latents, d_in)          each row of L2 norm <= delta
    multiplier                       scalar, learned when use_multiplier (atoms in the conical hull), else 0

The constraint is kept by a projection after every optimizer step (:meth:`ArchetypalSAE.project_dictionary`,
called by the trainer through ``normalize_decoder_rows``): ``W <- relu(W) / (rowsum + 1e-8)`` and
``Relax <- Relax * min(1, delta / ||Relax_row||)``. overcomplete's ``RelaxedArchetypalDictionary`` applies
the same projection at the start of each training forward pass, so after any optimizer step both give the
same dictionary (parity test in ``tests/sae/test_archetypal.py``). ``W`` starts as the identity (atom i =
candidate i), as in overcomplete. Codes: TopK, with a linear encoder (``encoder_hidden = 0``) or the
equivariant paper's nonlinear one (``encoder_hidden > 0``, README ``--sae-enc-type nonlinear``; the linear
encoder plus the residual ReLU branch of :class:`~saebench.sae.equivariant.MLPTopKSAE`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from saebench.sae.base import register_sae
from saebench.sae.equivariant import centred_input, mlp_encoder
from saebench.sae.topk import TopKSAE, TopKSAEConfig

__all__ = ["ArchetypalSAEConfig", "ArchetypalSAE", "kmeans_candidates"]

SIMPLEX_EPS = 1e-8  # overcomplete's guard against an all-zero row when re-normalising W


def kmeans_candidates(x: torch.Tensor, n_clusters: int, seed: int = 0) -> torch.Tensor:
    """``(n_clusters, d)`` k-means centroids (scikit-learn, k-means++ init) of ``x`` ``(n, d)``: the RA-SAE
    candidate points (Fel et al. 2025 §3 reduce the data to centroids to keep ``C`` small)."""
    from sklearn.cluster import KMeans

    if x.ndim != 2:
        raise ValueError(f"k-means needs an (n, d) matrix, got shape {tuple(x.shape)}")
    if not 0 < n_clusters <= x.shape[0]:
        raise ValueError(f"n_clusters must be in [1, n_rows={x.shape[0]}], got {n_clusters}")
    if not torch.isfinite(x).all():
        raise ValueError("k-means input contains NaN/Inf values")
    km = KMeans(n_clusters=n_clusters, n_init=1, random_state=seed).fit(x.detach().cpu().double().numpy())
    return torch.as_tensor(km.cluster_centers_, dtype=x.dtype)


@dataclass(frozen=True)
class ArchetypalSAEConfig(TopKSAEConfig):
    """Configuration of :class:`ArchetypalSAE`.

    n_candidates: number of candidate points ``C`` (>= n_latents, so the identity init gives every atom one).
    delta: bound on each relaxation row's norm (overcomplete default 1.0).
    use_multiplier: learn the scalar ``exp(multiplier)`` scale of the atoms (overcomplete default True).
    encoder_hidden: 0 for a linear encoder, else the hidden width of the nonlinear encoder.
    ``normalize_decoder`` must stay False: the archetypal constraint replaces unit-norm atoms.
    No decoder bias (and so no pre-encoder bias) by default, as overcomplete's RA-SAE: the atoms are built
    from data points, mean included, so a learned ``b_dec`` on top double-counts the mean (with ``b_dec``
    initialised to the data mean, every code died on our Shapes latents).
    """

    n_candidates: int = field(kw_only=True)
    delta: float = field(default=1.0, kw_only=True)
    use_multiplier: bool = field(default=True, kw_only=True)
    encoder_hidden: int = field(default=0, kw_only=True)
    normalize_decoder: bool = False
    pre_encoder_bias: bool = False
    decoder_bias: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.normalize_decoder:
            raise ValueError(
                "an archetypal dictionary is constrained to the relaxed hull; set normalize_decoder=False"
            )
        if self.tied:
            raise ValueError("an archetypal dictionary cannot be tied to the encoder; set tied=False")
        if self.n_candidates < self.n_latents:
            raise ValueError(
                f"n_candidates ({self.n_candidates}) must be >= n_latents ({self.n_latents}); "
                "use more k-means clusters"
            )
        if not self.delta >= 0:
            raise ValueError(f"delta must be >= 0, got {self.delta}")
        if self.encoder_hidden < 0:
            raise ValueError(f"encoder_hidden must be >= 0, got {self.encoder_hidden}")


@register_sae("archetypal")
class ArchetypalSAE(TopKSAE):
    """RA-SAE with TopK codes. ``W_dec`` is computed from ``W``, ``C``, ``Relax`` and ``multiplier`` (see the
    module docstring); set the candidates with :meth:`set_candidates` before training. The dense path only."""

    config_class = ArchetypalSAEConfig
    trains_from_config_alone = False  # needs set_candidates (k-means centroids of the data) first

    def __init__(self, config: ArchetypalSAEConfig):
        super().__init__(config)
        del self.W_dec  # replaced by the property below, computed from the archetypal parameters
        h, d, n_c = config.n_latents, config.d_in, config.n_candidates
        self.register_buffer("C", torch.zeros(n_c, d))
        self.W = nn.Parameter(torch.eye(h, n_c))
        self.Relax = nn.Parameter(torch.zeros(h, d))
        if config.use_multiplier:
            self.multiplier = nn.Parameter(torch.tensor(0.0))
        else:
            self.register_buffer("multiplier", torch.tensor(0.0))
        if config.encoder_hidden:
            self.encoder = mlp_encoder(d, config.encoder_hidden, h)

    @property
    def W_dec(self) -> torch.Tensor:  # noqa: N802 (the name of the base contract)
        """``(n_latents, d_in)`` atoms ``(W @ C + Relax) * exp(multiplier)``."""
        return (self.W @ self.C + self.Relax) * torch.exp(self.multiplier)

    @property
    def uses_sparse_path(self) -> bool:
        return False

    @torch.no_grad()
    def set_candidates(self, points: torch.Tensor) -> None:
        """Set ``C`` from ``(n_candidates, d_in)`` points given in the input space (normalised here)."""
        shape = tuple(self.C.shape)
        if tuple(points.shape) != shape:
            raise ValueError(
                f"candidates must have shape {shape} (n_candidates, d_in), got {tuple(points.shape)}"
            )
        if not torch.isfinite(points).all():
            raise ValueError("candidate points contain NaN/Inf values")
        self.C.copy_(self.normalize(points.to(self.C)))

    def pre_activation(self, x: torch.Tensor) -> torch.Tensor:
        pre = super().pre_activation(x)
        if self.config.encoder_hidden:
            pre = pre + self.encoder(centred_input(self, x))
        return pre

    @torch.no_grad()
    def project_dictionary(self) -> None:
        """Put ``W`` rows back on the simplex and ``Relax`` rows inside the ``delta`` ball."""
        w = torch.relu(self.W)
        self.W.copy_(w / (w.sum(dim=-1, keepdim=True) + SIMPLEX_EPS))
        norms = self.Relax.norm(dim=-1, keepdim=True).clamp_min(1e-12)  # a zero row stays zero
        self.Relax.mul_(torch.clamp(self.config.delta / norms, max=1.0))

    def remove_parallel_decoder_grad(self) -> None:
        """No-op: the atoms are not unit-norm; the constraint is the projection."""

    def normalize_decoder_rows(self) -> None:
        """The trainer's post-step hook: here, :meth:`project_dictionary`."""
        self.project_dictionary()


def _register_default_loss() -> None:
    """RA-SAE trains on plain MSE, like overcomplete's RATopKSAE (its TopK codes carry the sparsity)."""
    from saebench.train.losses import mse_loss, register_default_loss

    register_default_loss("archetypal", lambda sae: mse_loss)


_register_default_loss()
