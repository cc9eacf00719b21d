"""JumpReLU SAE (Rajamanoharan et al. 2024, "Jumping Ahead: Improving Reconstruction Fidelity with JumpReLU
Sparse Autoencoders", arXiv:2407.14435).

Per-latent threshold ``theta = exp(log_threshold)`` (a parameter; the log keeps it positive), and

    z     = relu(pre)
    codes = JumpReLU_theta(z) = z * H(z - theta)                              (paper Eq. 4, H(0) = 0)

The ReLU changes no code (``theta > 0``); it keeps negative pre-activations out of the kernel window below,
which matters only while ``theta < eps / 2``. overcomplete's ``JumpSAE`` applies it too, citing the paper's
Appendix J pseudo-code.

The jump has no useful derivative in ``theta``, so backward uses the paper's straight-through
pseudo-derivatives with a kernel ``K`` of bandwidth ``eps`` (§4, Eq. 11 and its Heaviside analogue; the
rectangle kernel ``K(u) = 1 if |u| < 1/2 else 0``, as in the paper's pseudo-code):

    d/d theta JumpReLU_theta(z) := -(theta / eps) K((z - theta) / eps)   d/dz JumpReLU_theta(z) = H(z - theta)
    d/d theta H(z - theta)      := -(1 / eps) K((z - theta) / eps)       d/dz H(z - theta) := 0

The second pair trains the L0 penalty (:func:`saebench.train.losses.jumprelu_l0_loss`) through
:meth:`JumpReLUSAE.differentiable_l0`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from saebench.sae.base import SAE, SAEConfig, register_sae

__all__ = ["JumpReLUSAEConfig", "JumpReLUSAE", "jumprelu", "step_ste", "rectangle_kernel"]


def rectangle_kernel(u: torch.Tensor) -> torch.Tensor:
    """``K(u) = 1`` where ``|u| < 1/2``, else 0 (paper §4 / Appendix J), in ``u``'s dtype."""
    return (u.abs() < 0.5).to(u.dtype)


def _kernel_sum_over_rows(pre: torch.Tensor, threshold: torch.Tensor, bandwidth: float,
                          grad_output: torch.Tensor) -> torch.Tensor:
    """``sum over rows of K((pre - theta) / eps) * grad_output``: ``(..., h) -> (h,)``."""
    window = rectangle_kernel((pre - threshold) / bandwidth)
    return (window * grad_output).reshape(-1, pre.shape[-1]).sum(dim=0)


class _JumpReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, pre: torch.Tensor, threshold: torch.Tensor, bandwidth: float) -> torch.Tensor:
        ctx.save_for_backward(pre, threshold)
        ctx.bandwidth = bandwidth
        return pre * (pre > threshold)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        pre, threshold = ctx.saved_tensors
        grad_pre = grad_threshold = None
        if ctx.needs_input_grad[0]:
            grad_pre = grad_output * (pre > threshold)
        if ctx.needs_input_grad[1]:
            kernel_sum = _kernel_sum_over_rows(pre, threshold, ctx.bandwidth, grad_output)
            grad_threshold = (-(threshold / ctx.bandwidth) * kernel_sum).to(threshold.dtype)
        return grad_pre, grad_threshold, None


class _StepSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, pre: torch.Tensor, threshold: torch.Tensor, bandwidth: float) -> torch.Tensor:
        ctx.save_for_backward(pre, threshold)
        ctx.bandwidth = bandwidth
        return (pre > threshold).to(pre.dtype)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        pre, threshold = ctx.saved_tensors
        grad_threshold = None
        if ctx.needs_input_grad[1]:
            kernel_sum = _kernel_sum_over_rows(pre, threshold, ctx.bandwidth, grad_output)
            grad_threshold = (-kernel_sum / ctx.bandwidth).to(threshold.dtype)
        return None, grad_threshold, None


def jumprelu(pre: torch.Tensor, threshold: torch.Tensor, bandwidth: float) -> torch.Tensor:
    """``pre * H(pre - threshold)`` with the rectangle-kernel pseudo-gradient for ``threshold``.

    ``pre``: ``(..., h)``; ``threshold``: ``(h,)``, positive; ``bandwidth``: ``eps > 0``. See the module doc.
    """
    return _JumpReLU.apply(pre, threshold, bandwidth)


def step_ste(pre: torch.Tensor, threshold: torch.Tensor, bandwidth: float) -> torch.Tensor:
    """``H(pre - threshold)`` (0/1 in ``pre``'s dtype) with the rectangle-kernel pseudo-gradient for
    ``threshold`` and zero gradient for ``pre``. Shapes as :func:`jumprelu`."""
    return _StepSTE.apply(pre, threshold, bandwidth)


@dataclass(frozen=True)
class JumpReLUSAEConfig(SAEConfig):
    """Configuration of :class:`JumpReLUSAE`.

    bandwidth: kernel bandwidth ``eps`` of the pseudo-gradients (> 0).
    initial_threshold: ``theta`` at initialisation, the same for every latent (> 0).
    Defaults 0.001 and 0.001: SAELens's ``jumprelu_bandwidth`` / ``jumprelu_init_threshold`` defaults, set
    for language-model activations and long runs. Both are in the units of the pre-activations: for inputs
    standardised per dimension and short runs, larger values train much faster
    (``docs/architectures/jumprelu.md``).
    """

    bandwidth: float = 0.001
    initial_threshold: float = 0.001

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("bandwidth", "initial_threshold"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


@register_sae("jumprelu")
class JumpReLUSAE(SAE):
    """``codes = relu(pre) * H(relu(pre) - theta)`` per latent, with learned thresholds
    ``theta = exp(log_threshold)`` ``(n_latents,)`` (see the module docstring). overcomplete's ``JumpSAE`` is
    the same map; its ``thresholds`` parameter is our ``log_threshold``.
    """

    config_class = JumpReLUSAEConfig

    def __init__(self, config: JumpReLUSAEConfig):
        super().__init__(config)
        self.log_threshold = nn.Parameter(torch.full((config.n_latents,), math.log(config.initial_threshold)))

    @property
    def threshold(self) -> torch.Tensor:
        """``(n_latents,)`` thresholds ``theta = exp(log_threshold)``."""
        return self.log_threshold.exp()

    def activation(self, pre_codes: torch.Tensor) -> torch.Tensor:
        return jumprelu(torch.relu(pre_codes), self.threshold, self.config.bandwidth)

    def differentiable_l0(self, pre_codes: torch.Tensor) -> torch.Tensor:
        """``(..., n_latents) -> (...,)`` number of active latents per row,
        ``sum_j H(relu(pre_j) - theta_j)``, differentiable in ``theta`` through the step STE (paper §4, the
        L0 of Eq. 10); no gradient flows to ``pre_codes``."""
        return step_ste(torch.relu(pre_codes), self.threshold, self.config.bandwidth).sum(dim=-1)
