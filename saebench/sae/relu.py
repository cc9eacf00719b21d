"""ReLU SAE: codes are the rectified encoder pre-activations (trained with an L1 penalty).

Sources: Bricken et al. 2023, "Towards Monosemanticity" (ReLU encoder, L1 penalty, pre-encoder bias);
the Anthropic "Circuits Updates - April 2024" training update (L1 weighted by decoder row norms; see
:func:`saebench.train.losses.relu_l1_loss`). overcomplete's ``SAE`` with its default ``"linear"`` encoder is
the same map with no decoder bias (``docs/architectures/relu.md``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from saebench.sae.base import SAE, SAEConfig, register_sae

__all__ = ["ReLUSAEConfig", "ReLUSAE"]


@dataclass(frozen=True)
class ReLUSAEConfig(SAEConfig):
    """Configuration of :class:`ReLUSAE`: only the options every architecture shares (:class:`SAEConfig`)."""


@register_sae("relu")
class ReLUSAE(SAE):
    """``codes = relu(pre)``, ``(..., n_latents) -> (..., n_latents)``; sparsity comes from the loss."""

    config_class = ReLUSAEConfig

    def activation(self, pre_codes: torch.Tensor) -> torch.Tensor:
        return torch.relu(pre_codes)
