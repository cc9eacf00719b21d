"""Shared fixtures for the trainer tests: tiny SAEs (d=16, h=64), data streams, and state comparison."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from saebench.data.synthetic import PlantedWorld
from saebench.sae import create_sae

D_IN, N_LATENTS, K = 16, 64, 4
HERE = Path(__file__).parent


@pytest.fixture(autouse=True)
def single_thread():
    """Tiny matmuls are far faster on one thread, and CPU results then do not depend on the runner's
    core count; the previous setting is restored after each test."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def make_sae(architecture: str = "topk", seed: int = 0, **overrides):
    """A tiny SAE with a seeded initialisation (same seed -> same weights)."""
    torch.manual_seed(seed)
    config = {"d_in": D_IN, "n_latents": N_LATENTS, **overrides}
    if architecture in ("topk", "batchtopk"):
        config.setdefault("k", K)
    return create_sae(architecture, **config)


@pytest.fixture
def sae_factory():
    return make_sae


def planted_batches(n_batches: int, batch_size: int = 32, seed: int = 0) -> Iterator[torch.Tensor]:
    """A planted world's training stream at d=16 (32 atoms, 3 active per row)."""
    world = PlantedWorld(d=D_IN, n_atoms=32, k=3, noise_std=0.01, seed=seed)
    return world.batches(batch_size, n_batches)


@pytest.fixture
def batches():
    return planted_batches


def global_rng_batches(n_batches: int, batch_size: int = 32) -> Iterator[torch.Tensor]:
    """Batches drawn lazily from torch's *global* RNG, so a resumed run reproduces them only if the RNG
    state is restored after the consumed batches are skipped."""
    for _ in range(n_batches):
        yield torch.randn(batch_size, D_IN) * 2.0 + 0.5


@pytest.fixture
def rng_batches():
    return global_rng_batches


def assert_same_state(a: torch.nn.Module, b: torch.nn.Module) -> None:
    """Every parameter and buffer bitwise equal (NaN buffers, e.g. an unset threshold, compare equal)."""
    state_a, state_b = a.state_dict(), b.state_dict()
    assert state_a.keys() == state_b.keys()
    for key in state_a:
        assert torch.equal(state_a[key], state_b[key]) or (
            torch.isnan(state_a[key]).all() and torch.isnan(state_b[key]).all()
        ), f"{key} differs"


@pytest.fixture
def same_state():
    return assert_same_state


def load_helper(name: str):
    """Import a helper script of this folder (e.g. ``ddp_worker.py``) by path: test files cannot import
    each other under ``--import-mode=importlib``, and the scripts also run as subprocesses."""
    spec = importlib.util.spec_from_file_location(f"saebench_train_tests_{name}", HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def helper():
    return load_helper
