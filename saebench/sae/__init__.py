"""SAE architectures. Importing this package registers every built-in architecture by name."""

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
]
