"""Equivariant SAEs (Erdogan & Lucic 2025, arXiv:2511.09432) and their nonlinear-encoder TopK baseline.

The paper's setting: a base model's activations ``a(x)`` of an input ``x`` and of its transforms ``g^p x``
under a cyclic group (C4: 90° rotations, ``--orbit-size 4``). A single matrix ``M`` explains how activations
transform, ``a(g x) ≈ M a(x)``, and powers of ``M`` give the other group elements (``a(g^p x) ≈ M^p a(x)``).
The method section was not available to us (``shared/papers/equivariant.md`` §2, §5); every formula below
is our design from the abstract, the summaries and the README flags, and ``reproductions/equivariant_sae/
NOTES.md`` records each choice.

Orbit batches: ``(n, G, d_in)`` tensors, ``orbits[:, p] = a(g^p x)`` (``G`` = group order, member 0 the
input as generated).

* :class:`MLPTopKSAE` (``"topk_mlp"``): TopK SAE with a nonlinear encoder (README ``--sae-enc-type
  nonlinear``, ``--sae-hidden-dim 128``, ``--sae-enc-activation relu``): the linear encoder plus a
  ``Linear(d_in, hidden) -> ReLU -> Linear(hidden, n_latents)`` branch (:func:`mlp_encoder`), then TopK;
  pre-encoder bias and unit-norm decoder as in base.py. The paper's vanilla SAE.
* :class:`EquivariantSAE` (``"equivariant"``): the same SAE plus a buffer ``M`` ``(d_in, d_in)`` (the fitted
  group action on the input space, :func:`fit_group_action`) and the orbit losses of :func:`orbit_loss`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from saebench.sae.base import SAE, affine, register_sae
from saebench.sae.topk import TopKSAE, TopKSAEConfig

__all__ = [
    "LOSS_TYPES",
    "MLPTopKSAEConfig",
    "MLPTopKSAE",
    "EquivariantSAEConfig",
    "EquivariantSAE",
    "check_orbits",
    "matrix_powers",
    "fit_group_action",
    "group_action_r2",
    "orbit_loss",
    "orbit_step",
    "transported_dictionary",
    "reconstruct_orbits",
]

LOSS_TYPES = ("latent_inv", "canonical", "output_inv")


def mlp_encoder(d_in: int, hidden: int, n_latents: int) -> nn.Sequential:
    """The nonlinear part of the encoder: ``Linear(d_in, hidden) -> ReLU -> Linear(hidden, n_latents)``, its
    last layer zero-initialised so that the encoder starts as the linear one (see :class:`MLPTopKSAE`)."""
    mlp = nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, n_latents))
    nn.init.zeros_(mlp[2].weight)
    nn.init.zeros_(mlp[2].bias)
    return mlp


def centred_input(sae: SAE, x: torch.Tensor) -> torch.Tensor:
    """What the encoder sees: ``normalize(x) - b_dec`` (pre-encoder bias) or ``normalize(x)``."""
    x_n = sae.normalize(x)
    return x_n - sae.b_dec if sae.config.pre_encoder_bias else x_n


@dataclass(frozen=True)
class MLPTopKSAEConfig(TopKSAEConfig):
    """:class:`~saebench.sae.topk.TopKSAEConfig` plus ``encoder_hidden``: hidden width of the nonlinear
    encoder (README ``--sae-hidden-dim``, 128)."""

    encoder_hidden: int = field(default=128, kw_only=True)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.tied:
            raise ValueError("a nonlinear encoder cannot be tied to the decoder; set tied=False")
        if self.encoder_hidden <= 0:
            raise ValueError(f"encoder_hidden must be positive, got {self.encoder_hidden}")


@register_sae("topk_mlp")
class MLPTopKSAE(TopKSAE):
    """TopK SAE with a nonlinear encoder (the README's vanilla SAE):
    ``pre = x_c @ W_enc + b_enc + mlp(x_c)`` with ``x_c = x_n - b_dec``; ``codes = keep_top_k(pre, k)``.

    The authors' encoder code was not available; a bare ``mlp(x_c)`` encoder trained far worse than a linear
    one on our toy model (FVU 0.39-0.45 vs 0.07 after 600-2000 steps), so the MLP is a residual branch whose
    last layer starts at zero: the encoder starts as the linear TopK encoder and learns a nonlinear
    correction (NOTES.md). No sparse path (the encoder is not one affine map): it runs base.py's dense path.
    """

    config_class = MLPTopKSAEConfig

    def __init__(self, config: MLPTopKSAEConfig):
        super().__init__(config)
        self.encoder = mlp_encoder(config.d_in, config.encoder_hidden, config.n_latents)

    @property
    def uses_sparse_path(self) -> bool:
        return False

    def pre_activation(self, x: torch.Tensor) -> torch.Tensor:
        x_c = centred_input(self, x)  # normalised once for both branches
        return affine(x_c, self.encoder_weight, self.b_enc) + self.encoder(x_c)


@dataclass(frozen=True)
class EquivariantSAEConfig(MLPTopKSAEConfig):
    """Configuration of :class:`EquivariantSAE`.

    group_order: ``G``, the orbit size (README ``--orbit-size 4``).
    loss_type: one of :data:`LOSS_TYPES` (README ``--sae-loss-type``); see :func:`orbit_loss`.
    lambda_mse: weight of the plain per-member reconstruction term (README ``--lambda-mse``, 0 for the
        equivariant runs).
    """

    group_order: int = field(default=4, kw_only=True)
    loss_type: str = field(default="latent_inv", kw_only=True)
    lambda_mse: float = field(default=0.0, kw_only=True)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.group_order < 2:
            raise ValueError(f"group_order must be >= 2, got {self.group_order}")
        if self.loss_type not in LOSS_TYPES:
            raise ValueError(f"unknown loss_type {self.loss_type!r}; choose one of {LOSS_TYPES}")
        if self.lambda_mse < 0:
            raise ValueError(f"lambda_mse must be >= 0, got {self.lambda_mse}")


@register_sae("equivariant")
class EquivariantSAE(MLPTopKSAE):
    """:class:`MLPTopKSAE` with a group action ``M`` (buffer ``(d_in, d_in)``, identity until
    :meth:`set_group_action`; saved with the weights). Train it on orbit batches with :func:`orbit_step`."""

    config_class = EquivariantSAEConfig
    trains_from_config_alone = False  # needs orbit batches and orbit_step

    def __init__(self, config: EquivariantSAEConfig):
        super().__init__(config)
        self.register_buffer("M", torch.eye(config.d_in))
        self._powers: tuple[tuple, torch.Tensor] | None = None  # ((M's identity and version), M^0..M^(G-1))

    @torch.no_grad()
    def set_group_action(self, matrix: torch.Tensor) -> None:
        """Set ``M`` (``(d_in, d_in)``, finite), e.g. from :func:`fit_group_action`."""
        if matrix.shape != self.M.shape:
            raise ValueError(f"M must have shape {tuple(self.M.shape)}, got {tuple(matrix.shape)}")
        if not torch.isfinite(matrix).all():
            raise ValueError("M contains NaN/Inf values")
        self.M.copy_(matrix)

    def group_powers(self) -> torch.Tensor:
        """``(G, d_in, d_in)``: ``M^0 .. M^(G-1)``, no gradient (``M`` is a fixed buffer). Computed once and
        reused until ``M`` changes (in place, by ``load_state_dict`` or by moving the module), since the
        three ``d³`` products would otherwise cost more than the rest of a training step."""
        key = (self.M.data_ptr(), self.M._version, self.M.device, self.M.dtype)
        if self._powers is None or self._powers[0] != key:
            with torch.no_grad():
                self._powers = (key, matrix_powers(self.M, self.config.group_order))
        return self._powers[1]


def check_orbits(orbits: torch.Tensor, d_in: int | None = None) -> None:
    """Raise ``ValueError`` unless ``orbits`` is a finite ``(n, G, d)`` tensor (``d == d_in`` if given)."""
    if orbits.ndim != 3:
        raise ValueError(f"orbit batches must have shape (n, G, d), got {tuple(orbits.shape)}")
    if d_in is not None and orbits.shape[-1] != d_in:
        raise ValueError(f"orbit batches must have width {d_in}, got {orbits.shape[-1]}")
    if not torch.isfinite(orbits).all():
        raise ValueError("orbit batch contains NaN/Inf values")


def matrix_powers(matrix: torch.Tensor, count: int) -> torch.Tensor:
    """``(count, d, d)``: ``matrix^0 .. matrix^(count-1)`` by repeated products (differentiable)."""
    powers = [torch.eye(matrix.shape[0], dtype=matrix.dtype, device=matrix.device)]
    for _ in range(count - 1):
        powers.append(matrix @ powers[-1])
    return torch.stack(powers)


def _transported(orbits: torch.Tensor, matrix: torch.Tensor, all_powers: bool) -> tuple[torch.Tensor, ...]:
    """``(prediction, target)`` for the group-action fit: ``M^p a_0`` vs ``a_p`` for ``p = 1..G-1``
    (``all_powers``), else ``M a_p`` vs ``a_{p+1}`` (each consecutive pair, one power)."""
    group_order = orbits.shape[1]
    if all_powers:
        powers = matrix_powers(matrix, group_order)[1:]  # (G-1, d, d)
        prediction = torch.einsum("pij,nj->npi", powers, orbits[:, 0])
        return prediction, orbits[:, 1:]
    return orbits[:, :-1] @ matrix.T, orbits[:, 1:]


def fit_group_action(
    orbits: torch.Tensor,
    epochs: int = 150,
    lr: float = 1e-3,
    all_powers: bool = True,
    batch_size: int = 128,
    seed: int = 0,
) -> torch.Tensor:
    """Fit ``M`` ``(d, d)`` with ``a(g^p x) ≈ M^p a(x)`` by Adam on the mean squared error.

    orbits: ``(n, G, d)`` activations of each input's orbit. ``all_powers`` (README ``--M-train-on-all-k``):
    fit every power ``p = 1..G-1`` from member 0; otherwise only ``p = 1`` on each consecutive pair.
    ``epochs``/``lr``: README ``--M-epochs 150`` / ``--M-learning-rate 0.001``. ``M`` starts at the
    least-squares solution of the one-step problem (a closed form; the README's optimiser then refines it).
    """
    check_orbits(orbits)
    if orbits.shape[1] < 2:
        raise ValueError("an orbit needs at least 2 members to fit a group action")
    source = orbits[:, :-1].reshape(-1, orbits.shape[-1])
    target = orbits[:, 1:].reshape(-1, orbits.shape[-1])
    start = torch.linalg.lstsq(source, target).solution.T  # target ≈ source @ M^T
    matrix = nn.Parameter(start.clone())
    optimizer = torch.optim.Adam([matrix], lr=lr)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in torch.randperm(orbits.shape[0], generator=generator).split(batch_size):
            prediction, goal = _transported(orbits[idx], matrix, all_powers)
            loss = (prediction - goal).pow(2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return matrix.detach()


@torch.no_grad()
def group_action_r2(matrix: torch.Tensor, orbits: torch.Tensor) -> torch.Tensor:
    """``(G-1,)`` R² of ``M^p a(x)`` as a prediction of ``a(g^p x)``, ``p = 1..G-1``:
    ``1 - sum ||a_p - M^p a_0||² / sum ||a_p - mean(a_p)||²`` (the coefficient of determination over all
    coordinates, variance pooled; the paper reports "high R²" for M without its formula)."""
    check_orbits(orbits, matrix.shape[0])
    prediction, target = _transported(orbits, matrix, all_powers=True)
    residual = (target - prediction).pow(2).sum(dim=(0, 2))
    total = (target - target.mean(dim=0, keepdim=True)).pow(2).sum(dim=(0, 2)).clamp_min(1e-12)
    return 1.0 - residual / total


def _squared_error(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    return (x - x_hat).pow(2).sum(dim=-1).mean()


def transported_dictionary(sae: SAE, powers: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The decoder carried into every frame: ``(atoms (G, n_latents, d_in), offsets (G, d_in))`` with
    ``M^p decode(z) = z @ atoms[p] + offsets[p]`` for ``(G, d_in, d_in)`` ``powers``.

    ``decode`` is affine in the codes (``denormalize(z W_dec + b_dec)``), so ``offsets[p] = M^p decode(0)``
    and ``atoms[p] = M^p (decode(e_i) - decode(0))`` per latent ``i``. Carrying the ``n_latents`` atoms
    costs ``G h d²`` once per step instead of ``G n d²`` per batch of ``n`` decoded rows; differentiable in
    the decoder's parameters."""
    h = sae.n_latents
    probes = torch.cat([torch.zeros(1, h), torch.eye(h)]).to(device=powers.device, dtype=powers.dtype)
    decoded = sae.decode(probes)  # (1 + h, d): decode(0), decode(e_i)
    offset, basis = decoded[0], decoded[1:] - decoded[:1]
    atoms = torch.einsum("pij,hj->phi", powers, basis)
    return atoms, offset @ powers.transpose(1, 2)


def _member_codes(sae: EquivariantSAE, orbits: torch.Tensor, powers: torch.Tensor) -> torch.Tensor:
    """The codes each loss type reconstructs from: ``(n, 1, h)`` ``E(a_0)`` (canonical), else ``(n, G, h)``:
    ``E(a_p)`` (latent_inv) or ``E(M^(G-p) a_p)`` (output_inv)."""
    loss_type = sae.config.loss_type
    if loss_type == "canonical":
        return sae.encode(orbits[:, :1])
    if loss_type == "latent_inv":
        return sae.encode(orbits)
    back = powers[(-torch.arange(powers.shape[0])) % powers.shape[0]]  # M^(G-p)
    return sae.encode(torch.einsum("pij,npj->npi", back, orbits))


def orbit_loss(
    sae: EquivariantSAE, orbits: torch.Tensor
) -> tuple[torch.Tensor, dict[str, float], torch.Tensor]:
    """Loss of an equivariant SAE on an orbit batch ``(n, G, d_in)``; returns ``(loss, terms, codes)``.

    Decoded vectors live in member 0's frame and reach member ``p`` through ``M^p``. Squared errors are
    summed over features and averaged over rows and members. With ``D``/``E`` the decoder/encoder:

    * ``canonical``: ``z = E(a_0)``; ``L = mean_p ||a_p - M^p D(z)||²`` — the code of the input as generated
      explains its whole orbit.
    * ``latent_inv``: ``z_p = E(a_p)`` for every member; ``L = mean_{p,q} ||a_q - M^q D(z_p)||²`` — every
      member's code must reconstruct the whole orbit from member 0's frame, so the codes are invariant
      (the same target for every member).
    * ``output_inv``: ``z_p = E(M^(G-p) a_p)`` (each member mapped back to member 0's frame);
      ``L = mean_p ||a_p - M^p D(z_p)||²`` — reconstructions are equivariant by construction.

    Plus ``lambda_mse * mean_p ||a_p - D(E(a_p))||²``. ``codes`` are the ``(n, ·, n_latents)`` codes used.
    ``M^p D(z)`` is computed as ``z @ atoms[p] + offsets[p]`` (:func:`transported_dictionary`).
    """
    config = sae.config
    check_orbits(orbits, sae.d_in)
    if orbits.shape[1] != config.group_order:
        raise ValueError(
            f"orbit batches must have {config.group_order} members (group_order), got {orbits.shape[1]}"
        )
    powers = sae.group_powers()
    atoms, offsets = transported_dictionary(sae, powers)
    codes = _member_codes(sae, orbits, powers)
    if config.loss_type == "latent_inv":
        carried = torch.einsum("nph,qhi->npqi", codes, atoms) + offsets  # [n, p, q] = M^q D(z_p)
        loss = _squared_error(orbits[:, None], carried)
    elif config.loss_type == "canonical":
        loss = _squared_error(orbits, torch.einsum("nh,phi->npi", codes[:, 0], atoms) + offsets)
    else:
        loss = _squared_error(orbits, torch.einsum("nph,phi->npi", codes, atoms) + offsets)
    terms = {config.loss_type: float(loss.detach())}
    if config.lambda_mse > 0:
        mse = _squared_error(orbits, sae(orbits).x_hat)
        terms["mse"] = float(mse.detach())
        loss = loss + config.lambda_mse * mse
    return loss, terms, codes


@torch.no_grad()
def reconstruct_orbits(sae: EquivariantSAE, orbits: torch.Tensor) -> torch.Tensor:
    """``(n, G, d_in)`` reconstruction of every member, ``M^p D(z)``, with the code ``z`` of member ``p``
    that the loss type uses: ``E(a_0)`` (canonical), ``E(a_p)`` (latent_inv), ``E(M^(G-p) a_p)``
    (output_inv). For metrics such as FVU over all members."""
    check_orbits(orbits, sae.d_in)
    powers = sae.group_powers()
    atoms, offsets = transported_dictionary(sae, powers)
    codes = _member_codes(sae, orbits, powers).expand(-1, orbits.shape[1], -1)
    return torch.einsum("nph,phi->npi", codes, atoms) + offsets


def orbit_step(
    sae: EquivariantSAE, batch: torch.Tensor, observe_codes
) -> tuple[torch.Tensor, dict[str, float]]:
    """A trainer ``step_fn`` (:mod:`saebench.train.trainer`) for orbit batches ``(n, G, d_in)``."""
    if not isinstance(sae, EquivariantSAE):
        raise TypeError(f"orbit_step trains an EquivariantSAE, got {type(sae).__name__}")
    loss, terms, codes = orbit_loss(sae, batch)
    observe_codes(codes.detach())
    return loss, terms


def _register_default_loss() -> None:
    """The vanilla nonlinear-encoder SAE trains on plain MSE like every TopK SAE (README
    ``--sae-loss-type NA`` for the vanilla runs)."""
    from saebench.train.losses import mse_loss, register_default_loss

    register_default_loss("topk_mlp", lambda sae: mse_loss)


_register_default_loss()
