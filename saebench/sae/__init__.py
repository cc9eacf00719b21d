"""SAE architectures. Importing this package registers every built-in architecture by name."""

from saebench.sae.archetypal import ArchetypalSAE  # noqa: F401 (registers archetypal, topk_mlp, equivariant)
from saebench.sae.base import (
    SAE,
    CheckpointArchitectureError,
    SAEConfig,
    SAEOutput,
    available_architectures,
    create_sae,
    load_sae,
    register_sae,
    save_sae,
)
from saebench.sae.jumprelu import JumpReLUSAE, JumpReLUSAEConfig
from saebench.sae.matryoshka import MatryoshkaSAE, MatryoshkaSAEConfig
from saebench.sae.relu import ReLUSAE, ReLUSAEConfig
from saebench.sae.topk import BatchTopKSAE, BatchTopKSAEConfig, TopKSAE, TopKSAEConfig

__all__ = [
    "SAE",
    "SAEConfig",
    "SAEOutput",
    "CheckpointArchitectureError",
    "available_architectures",
    "create_sae",
    "load_sae",
    "register_sae",
    "save_sae",
    "ReLUSAE",
    "ReLUSAEConfig",
    "TopKSAE",
    "TopKSAEConfig",
    "BatchTopKSAE",
    "BatchTopKSAEConfig",
    "JumpReLUSAE",
    "JumpReLUSAEConfig",
    "MatryoshkaSAE",
    "MatryoshkaSAEConfig",
]
