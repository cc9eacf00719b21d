"""Matryoshka SAE (MSAE) of Zaigrajew, Baniecki & Biecek 2025, "Interpreting CLIP with Hierarchical Sparse
Autoencoders" (ICML 2025; arXiv 2502.20578), as the authors' code defines it (``sae.py``
``MatryoshkaAutoencoder``, ``train.py``; msae.md §3.3-3.5).

One encoder and one decoder are shared by ``h`` nested TopK levels ``k_1 < k_2 < ... < k_h``::

    pre      = (x_n - b_dec) @ W_enc + b_enc                     # (..., n_latents)
    codes_i  = cap(TopK_{k_i}(pre) with ReLU)                     # level i; the sets are nested
    x_hat_i  = codes_i @ W_dec + b_dec                            # one reconstruction per level
    loss     = sum_i alpha_i * l(x_hat_i, x_n) / sum_i alpha_i    # :func:`matryoshka_loss`

Nesting list (authors' code): start at 64 and double while the next value stays ``<= n_latents``, then append
``n_latents`` itself when missing, so the last level is plain ReLU over every latent (:func:`nesting_list`).
Weights (:func:`level_weights`) are matched to levels in ascending ``k``: uniform ``alpha_i = 1`` ("UW") or
reverse ``alpha_i = h - i + 1`` ("RW": the *sparsest* level gets the largest weight ``h``; the code does
this, contrary to a comment in ``train.py`` that says the opposite). ``cap`` is the optional soft-cap
``c * tanh(z / c)`` (off when ``soft_cap = 0``, the refactored code's default).

Outputs: :meth:`MatryoshkaSAE.forward` returns the codes of one level, ``inference_k`` (default the first
level, the authors' "sparse" output, which their ``load_model`` rebuilds as ``TopKReLU_64``);
:meth:`MatryoshkaSAE.full_codes` is their "all"/"full" output, ReLU (capped) of every pre-activation.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

import torch

from saebench.sae.base import SAE, SAEConfig, SAEOutput, register_sae

__all__ = [
    "MATRYOSHKA_WEIGHTINGS",
    "MATRYOSHKA_RECONSTRUCTIONS",
    "AUTHORS_FIRST_K",
    "nesting_list",
    "level_weights",
    "soft_cap",
    "nested_top_k",
    "MatryoshkaSAEConfig",
    "MatryoshkaSAE",
    "matryoshka_loss",
]

MATRYOSHKA_WEIGHTINGS = ("rw", "uw")
MATRYOSHKA_RECONSTRUCTIONS = ("mse", "nmse")
#: The smallest nesting level of the authors' code (msae.md §3.3).
AUTHORS_FIRST_K = 64


def nesting_list(n_latents: int, first_k: int = AUTHORS_FIRST_K) -> tuple[int, ...]:
    """Levels ``first_k, 2 first_k, 4 first_k, ... <= n_latents``, then ``n_latents`` if not already last.

    Authors' code (msae.md §3.3 table): ``nesting_list(6144) == (64, 128, ..., 4096, 6144)``. A
    ``first_k > n_latents`` gives the single level ``(n_latents,)``.
    """
    if n_latents <= 0 or first_k <= 0:
        raise ValueError(f"n_latents and first_k must be positive, got {n_latents} and {first_k}")
    levels = []
    k = first_k
    while k <= n_latents:
        levels.append(k)
        k *= 2
    if not levels or levels[-1] != n_latents:
        levels.append(n_latents)
    return tuple(levels)


def level_weights(n_levels: int, weighting: str) -> tuple[float, ...]:
    """``alpha`` per level in ascending-``k`` order: ``"uw"`` all 1; ``"rw"`` ``(h, h-1, ..., 1)``
    (msae.md §3.3: the sparsest level weighs most)."""
    if weighting not in MATRYOSHKA_WEIGHTINGS:
        raise ValueError(f"unknown weighting {weighting!r}; choose one of {MATRYOSHKA_WEIGHTINGS}")
    if n_levels <= 0:
        raise ValueError(f"n_levels must be positive, got {n_levels}")
    if weighting == "uw":
        return (1.0,) * n_levels
    return tuple(float(n_levels - i) for i in range(n_levels))


def soft_cap(codes: torch.Tensor, cap: float) -> torch.Tensor:
    """``cap * tanh(codes / cap)``; identity when ``cap == 0`` (MSAE code ``SoftCapping``, msae.md §3.1)."""
    return codes if cap == 0 else cap * torch.tanh(codes / cap)


def nested_top_k(pre_codes: torch.Tensor, ks: tuple[int, ...]) -> list[torch.Tensor]:
    """For each ``k`` of ``ks``: ReLU of the ``k`` largest entries of each row of ``pre_codes``, 0 elsewhere.

    ``pre_codes``: ``(..., n_latents)``; returns one ``(..., n_latents)`` tensor per ``k``. One descending
    sort ranks every entry, so the kept sets are nested by construction (ties broken by the sort) and the
    gradient flows to the kept entries only.
    """
    order = pre_codes.argsort(dim=-1, descending=True)
    ranks = torch.empty_like(order).scatter_(
        -1, order, torch.arange(pre_codes.shape[-1], device=pre_codes.device).expand_as(order)
    )
    active = torch.relu(pre_codes)
    return [active * (ranks < k) for k in ks]


@dataclass(frozen=True)
class MatryoshkaSAEConfig(SAEConfig):
    """Configuration of :class:`MatryoshkaSAE`.

    weighting: ``"rw"`` (reverse) or ``"uw"`` (uniform) level weights, see :func:`level_weights`.
    first_k: the smallest level when ``k_levels`` is not given (authors: 64; toy worlds need smaller).
    k_levels: explicit strictly increasing levels, each in ``[1, n_latents]``; default
        :func:`nesting_list` ``(n_latents, first_k)``.
    inference_k: the level whose codes :meth:`MatryoshkaSAE.forward` returns (default the first level).
    soft_cap: ``c`` of the soft-cap ``c * tanh(z / c)``; 0 disables it (authors' refactored default).
    """

    weighting: str = "rw"
    first_k: int = AUTHORS_FIRST_K
    k_levels: tuple[int, ...] | None = None
    inference_k: int | None = None
    soft_cap: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.weighting not in MATRYOSHKA_WEIGHTINGS:
            raise ValueError(f"unknown weighting {self.weighting!r}; choose one of {MATRYOSHKA_WEIGHTINGS}")
        if self.k_levels is None:
            levels = nesting_list(self.n_latents, self.first_k)
        else:
            levels = tuple(int(k) for k in self.k_levels)  # a list from JSON/YAML becomes a tuple
        if not levels or any(b <= a for a, b in pairwise(levels)):
            raise ValueError(f"k_levels must be non-empty and strictly increasing, got {levels}")
        if not 0 < levels[0] <= levels[-1] <= self.n_latents:
            raise ValueError(f"k_levels must lie in [1, n_latents={self.n_latents}], got {levels}")
        object.__setattr__(self, "k_levels", levels)
        if self.inference_k is not None and self.inference_k not in levels:
            raise ValueError(f"inference_k={self.inference_k} is not one of the levels {levels}")
        if not self.soft_cap >= 0:
            raise ValueError(f"soft_cap must be >= 0 (0 disables it), got {self.soft_cap}")


@register_sae("matryoshka")
class MatryoshkaSAE(SAE):
    """Matryoshka SAE (see the module docstring). ``(..., d_in) -> SAEOutput`` with the codes of
    ``inference_k``; :meth:`level_outputs` gives every level for the loss."""

    config_class = MatryoshkaSAEConfig

    @property
    def k_levels(self) -> tuple[int, ...]:
        return self.config.k_levels

    @property
    def weights(self) -> tuple[float, ...]:
        return level_weights(len(self.k_levels), self.config.weighting)

    @property
    def inference_k(self) -> int:
        return self.config.inference_k or self.k_levels[0]

    def activation(self, pre_codes: torch.Tensor) -> torch.Tensor:
        return self.codes_at(pre_codes, self.inference_k)

    def codes_at(self, pre_codes: torch.Tensor, k: int) -> torch.Tensor:
        """``(..., n_latents)`` codes of the level keeping ``k`` latents (any ``1 <= k <= n_latents``)."""
        if not 0 < k <= self.n_latents:
            raise ValueError(f"k must lie in [1, {self.n_latents}], got {k}")
        return soft_cap(nested_top_k(pre_codes, (k,))[0], self.config.soft_cap)

    def full_codes(self, pre_codes: torch.Tensor) -> torch.Tensor:
        """The authors' "all"/"full" output: capped ReLU of every pre-activation (msae.md §3.4)."""
        return soft_cap(torch.relu(pre_codes), self.config.soft_cap)

    def level_outputs(self, x: torch.Tensor) -> list[SAEOutput]:
        """One :class:`SAEOutput` per level (ascending ``k``), sharing one encoder pass."""
        self.check_input(x)
        return self.levels_from_pre(self.pre_activation(x))

    def levels_from_pre(self, pre: torch.Tensor) -> list[SAEOutput]:
        """:meth:`level_outputs` from pre-activations ``(..., n_latents)`` already computed."""
        levels = nested_top_k(pre, self.k_levels)
        return [
            SAEOutput(pre, codes, self.decode(codes))
            for codes in (soft_cap(c, self.config.soft_cap) for c in levels)
        ]


def _level_reconstruction(x_n: torch.Tensor, x_hat_n: torch.Tensor, kind: str) -> torch.Tensor:
    """``"mse"``: mean over all elements of ``(x_hat - x)^2``; ``"nmse"``: mean over rows of
    ``mean_d (x_hat - x)^2 / mean_d x^2`` (MSAE ``loss.py``, with mean-centred data, msae.md §3.5)."""
    error = (x_hat_n - x_n).square()
    if kind == "mse":
        return error.mean()
    return (error.mean(dim=-1) / x_n.square().mean(dim=-1).clamp_min(1e-12)).mean()


def matryoshka_loss(reconstruction: str = "mse"):
    """Loss factory: ``sum_i alpha_i * l(x_hat_i, x) / sum_i alpha_i`` over the levels of a
    :class:`MatryoshkaSAE`, computed in its normalised space (msae.md §3.3; no sparsity penalty).

    ``reconstruction``: ``"mse"`` (README's recommendation, the default) or ``"nmse"`` (the code's config
    default and the paper's original loss). Logs ``loss``, ``mse`` (of the inference level) and
    ``level_k{k}`` per level. Every level is decoded from ``out.pre_codes`` (no second encoder pass).
    """
    if reconstruction not in MATRYOSHKA_RECONSTRUCTIONS:
        raise ValueError(
            f"unknown reconstruction {reconstruction!r}; choose one of {MATRYOSHKA_RECONSTRUCTIONS}"
        )

    def loss(x: torch.Tensor, out: SAEOutput, sae: SAE) -> tuple[torch.Tensor, dict[str, float]]:
        if not isinstance(sae, MatryoshkaSAE):
            raise TypeError(f"matryoshka_loss needs a 'matryoshka' SAE, got a {sae.architecture!r} SAE")
        x_n = sae.normalize(x)
        terms = [
            _level_reconstruction(x_n, sae.normalize(level.x_hat), reconstruction)
            for level in sae.levels_from_pre(out.pre_codes)
        ]
        weights = sae.weights
        total = sum(w * t for w, t in zip(weights, terms, strict=True)) / sum(weights)
        inference_mse = (x_n - sae.normalize(out.x_hat)).square().mean()
        values = torch.stack([total, inference_mse, *terms]).detach().tolist()
        logs = {"loss": values[0], "mse": values[1]}
        logs.update({f"level_k{k}": v for k, v in zip(sae.k_levels, values[2:], strict=True)})
        return total, logs

    loss.__name__ = loss.__qualname__ = f"matryoshka_loss({reconstruction=!r})"
    return loss


def _register_default_loss() -> None:
    from saebench.train.losses import register_default_loss

    register_default_loss("matryoshka", lambda sae: matryoshka_loss())


_register_default_loss()
