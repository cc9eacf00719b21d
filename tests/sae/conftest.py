"""Shared fixtures for the SAE tests: tiny SAEs of every standard architecture and the overcomplete peer."""

from __future__ import annotations

from types import ModuleType

import pytest
import torch

from saebench.peers import import_overcomplete
from saebench.sae import SAE, create_sae

D_IN, N_LATENTS, K = 8, 32, 3

# Architecture-specific config for every standard architecture. JumpReLU thresholds start at 0.05 so that
# random inputs give some zero and some non-zero codes.
ARCHITECTURE_CONFIG = {
    "relu": {},
    "topk": {"k": K},
    "batchtopk": {"k": K},
    "jumprelu": {"initial_threshold": 0.05, "bandwidth": 0.01},
}


@pytest.fixture(autouse=True)
def single_thread():
    """Tiny matmuls are faster on one thread, and results then do not depend on the runner's core count."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def build_sae(architecture: str, seed: int = 0, **overrides) -> SAE:
    """A tiny seeded SAE (d_in=8, n_latents=32) with a non-zero encoder bias so every parameter matters."""
    torch.manual_seed(seed)
    config = {"d_in": D_IN, "n_latents": N_LATENTS, **ARCHITECTURE_CONFIG[architecture], **overrides}
    sae = create_sae(architecture, **config)
    with torch.no_grad():
        sae.b_enc.normal_(0.0, 0.1)
    return sae


@pytest.fixture
def make_sae():
    return build_sae


@pytest.fixture(params=sorted(ARCHITECTURE_CONFIG))
def architecture(request) -> str:
    return request.param


@pytest.fixture
def prime():
    """Make an SAE usable in eval mode: a BatchTopK SAE needs one training-mode pass to set its threshold."""

    def prime_for_eval(sae: SAE, x: torch.Tensor) -> SAE:
        if sae.architecture == "batchtopk":
            sae.train()
            with torch.no_grad():
                sae(x)
        return sae.eval()

    return prime_for_eval


@pytest.fixture(scope="session")
def overcomplete() -> ModuleType:
    """The peer library, or skip (it is a dev dependency)."""
    try:
        return import_overcomplete()
    except ImportError as err:
        pytest.skip(str(err))
