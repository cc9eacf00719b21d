"""The fast paths give the same results as the plain ones: sparse TopK training (with dead-latent tracking and
AuxK read from the sparse codes), bf16 autocast, ``torch.compile``, and the streaming evaluator over a million
rows without dense codes, plus its encode-only variant."""

from __future__ import annotations

import copy

import pytest
import torch

from saebench.data.synthetic import PlantedWorld
from saebench.evaluate import evaluate_sae, latent_statistics
from saebench.metrics.streaming import LatentStatsAccumulator
from saebench.sae import SAE, create_sae
from saebench.sae.sparse_decode import SparseCodes
from saebench.train import TrainConfig, train_sae

D, H, K = 16, 64, 4


@pytest.fixture(autouse=True)
def single_thread():
    """Tiny matmuls are faster on one thread, and results then do not depend on the runner's core count."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _world() -> PlantedWorld:
    return PlantedWorld(d=D, n_atoms=32, k=3, noise_std=0.01, seed=0)


def _sae(architecture: str = "topk", sparse: bool = True) -> SAE:
    torch.manual_seed(0)
    sae = create_sae(architecture, d_in=D, n_latents=H, **({} if architecture == "relu" else {"k": K}))
    sae.sparse_decoding = sparse
    return sae


def _train(sae: SAE, steps: int, **config) -> list[dict]:
    config = TrainConfig(total_steps=steps, progress=False, **config)
    return train_sae(sae, _world().batches(64, steps), config).history


# ------------------------------------------------------------------------------- sparse training
@pytest.mark.parametrize("architecture", ["topk", "batchtopk"])
def test_sparse_training_matches_dense_training_with_auxk_and_dead_latents(architecture):
    """A short window (256 tokens = 4 batches) makes latents die, so AuxK (which reads the dense
    pre-activations) and the dead-latent tracker (which reads the sparse indices) both act. Losses agree to
    1e-4 relative: each step's float32 rounding differences (~1e-7) are carried through 30 Adam updates."""
    config = {"auxk_coefficient": 1 / 32, "dead_window_tokens": 256, "lr": 3e-3}
    sparse = _train(_sae(architecture, sparse=True), 30, **config)
    dense = _train(_sae(architecture, sparse=False), 30, **config)
    assert max(record["dead_fraction"] for record in dense) > 0, "no latent died: AuxK was never exercised"
    assert max(record["auxk"] for record in dense) > 0
    for s, d in zip(sparse, dense, strict=True):
        assert s["l0"] == d["l0"] and s["dead_fraction"] == d["dead_fraction"], s["step"]
        for key in ("loss", "mse", "auxk"):
            assert s[key] == pytest.approx(d[key], rel=1e-4, abs=1e-7), (s["step"], key)


def test_bf16_autocast_training_reaches_the_fp32_metrics_with_fp32_master_weights():
    """bf16 keeps 8 significant bits (relative rounding 2^-8 = 0.4%) in the matmuls, so each step's gradient
    is perturbed by about that much and the two runs drift apart slightly; on this world the held-out FVU
    differs by under 1e-3. 0.02 (about 10% of the final FVU) leaves room for that drift and fails if bf16
    training does not train (the FVU then stays near 1)."""
    held_out = _world().sample(2048, stream=1).x
    results = {}
    for amp in (None, "bf16"):
        sae = _sae()
        _train(sae, 150, lr=3e-3, amp_dtype=amp)
        assert all(p.dtype == torch.float32 for p in sae.parameters())
        results[amp] = evaluate_sae(sae, held_out.split(512))
    assert results[None]["fvu_dataset"] < 0.5, "fp32 training did not learn: the comparison would be vacuous"
    assert results["bf16"]["fvu_dataset"] == pytest.approx(results[None]["fvu_dataset"], abs=0.02)
    assert results["bf16"]["l0"] == pytest.approx(results[None]["l0"], abs=0.2)  # <= K either way


@pytest.mark.slow  # torch.compile spends ~20 s compiling on a CPU, however tiny the model
def test_compiled_training_matches_eager_training():
    """Inductor may fuse and reorder float32 reductions: losses agree to 1e-5 relative over 5 steps."""
    eager = _train(_sae(), 5, lr=3e-3)
    compiled = _train(_sae(), 5, lr=3e-3, compile=True)
    for e, c in zip(eager, compiled, strict=True):
        assert c["loss"] == pytest.approx(e["loss"], rel=1e-5)
        assert c["l0"] == e["l0"]


def test_compile_option_is_validated():
    with pytest.raises(TypeError, match="compile must be True or False"):
        TrainConfig(total_steps=1, compile="yes")
    step = lambda sae, rows, observe: (sae(rows).x_hat.square().mean(), {})  # noqa: E731
    with pytest.raises(ValueError, match="custom step_fn compiles its own modules"):
        train_sae(_sae(), [torch.randn(4, D)], TrainConfig(total_steps=1, compile=True), step_fn=step)


# ------------------------------------------------------------------------------------ evaluation
def _rows(n_batches: int, batch_size: int = 4096):
    """A deterministic stream, generated batch by batch (never held in memory as a whole)."""
    generator = torch.Generator().manual_seed(0)
    for _ in range(n_batches):
        yield torch.randn(batch_size, 8, generator=generator) * 2.0 + 0.5


@pytest.mark.slow  # a million rows through both evaluators: 6 s on an idle 2-core runner, 15 s under load
def test_evaluator_streams_a_million_rows_without_building_dense_codes(monkeypatch):
    """2^20 rows through a TopK SAE: the sparse evaluator never densifies the codes nor runs the dense
    decoder, and every metric equals the dense evaluator's (reconstruction sums to 1e-6 relative: float32 rows
    summed into float64 accumulators in another order; latent counts exactly)."""
    torch.manual_seed(0)
    sae = create_sae("topk", d_in=8, n_latents=32, k=2)
    dense = copy.deepcopy(sae)
    dense.sparse_decoding = False
    expected = evaluate_sae(dense, _rows(256))

    def forbidden(*args, **kwargs):
        raise AssertionError("the sparse evaluator built dense codes or ran the dense decoder")

    monkeypatch.setattr(SparseCodes, "to_dense", forbidden)
    monkeypatch.setattr(SAE, "decode", forbidden)
    streamed = evaluate_sae(sae, _rows(256))
    assert streamed["n_rows"] == 2**20
    assert streamed.keys() == expected.keys()
    for key, value in expected.items():
        assert streamed[key] == pytest.approx(value, rel=1e-6, abs=1e-9), key


def test_latent_statistics_is_encode_only_and_matches_the_dense_accumulator(monkeypatch):
    sae = _sae("topk")
    batches = list(_world().batches(256, 3))
    reference = LatentStatsAccumulator(H, threshold=0.1)
    with torch.no_grad():
        for batch in batches:
            reference.update(sae.encode(batch))
    expected = reference.compute()

    def forbidden(*args, **kwargs):
        raise AssertionError("latent_statistics ran a decoder")

    for name in ("decode", "decode_sparse", "_decode_active"):
        monkeypatch.setattr(SAE, name, forbidden)
    stats = latent_statistics(sae, batches, threshold=0.1)
    assert stats.n_rows == 3 * 256 and stats.zero_count == expected.zero_count
    assert torch.equal(stats.firing_counts, expected.firing_counts)
    # float64 sums of the same float32 codes, added in another order
    torch.testing.assert_close(stats.activation_sums, expected.activation_sums, rtol=1e-12, atol=1e-12)
    relu = latent_statistics(_sae("relu"), batches)  # dense architectures take the dense accumulator
    assert relu.n_rows == 3 * 256


def test_latent_statistics_needs_batches_and_a_valid_threshold():
    with pytest.raises(ValueError, match="got no batches"):
        latent_statistics(_sae(), [])
    with pytest.raises(ValueError, match="threshold must be >= 0"):
        latent_statistics(_sae(), [torch.randn(4, D)], threshold=-1.0)
