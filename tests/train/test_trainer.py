"""The training loop: learning, clipping, AMP, b_dec init, JSONL log, NaN policy, pluggable steps, errors."""

from __future__ import annotations

import hashlib
import json
import math

import pytest
import torch

from saebench.train import NonFiniteTrainingError, TrainConfig, Trainer, train_sae
from saebench.train.checkpoint import latest_checkpoint
from saebench.train.losses import mse_loss


def quiet(**fields) -> TrainConfig:
    return TrainConfig(progress=False, **fields)


def test_training_lowers_the_loss_with_the_default_loss(sae_factory, batches):
    result = train_sae(sae_factory("topk"), batches(60), quiet(total_steps=60, lr=3e-3))
    first, last = result.history[0], result.history[-1]
    assert result.steps == 60 and len(result.history) == 60
    assert last["mse"] < 0.5 * first["mse"]
    assert last["l0"] == 4.0  # TopK with k=4: exactly 4 active latents per row
    assert last["tokens"] == 60 * 32
    # decoder rows stay unit-norm after every step (float32 rounding of the renormalisation)
    assert torch.allclose(result.sae.W_dec.norm(dim=1), torch.ones(64), atol=1e-6)


@pytest.mark.parametrize("architecture", ["relu", "topk", "batchtopk", "jumprelu"])
def test_every_standard_architecture_trains_with_its_default_loss(sae_factory, batches, architecture):
    config = quiet(total_steps=15, lr=3e-3, auxk_coefficient=1 / 32, ghost_grads=True, dead_window_tokens=64)
    result = train_sae(sae_factory(architecture), batches(15), config)
    assert all(math.isfinite(r["loss"]) for r in result.history)
    assert result.history[-1]["mse"] < result.history[0]["mse"]  # the aux terms grow as latents die


def test_training_stops_when_batches_run_out(sae_factory, batches, tmp_path):
    config = quiet(total_steps=100, checkpoint_dir=str(tmp_path))
    result = train_sae(sae_factory(), batches(7), config, loss_fn=mse_loss)
    assert result.steps == 7
    assert result.checkpoint == latest_checkpoint(tmp_path) and result.checkpoint.name == "step_00000007"


def _step_and_grad_norm(sae, batch, grad_clip):
    trainer = Trainer(sae, quiet(total_steps=1, grad_clip=grad_clip), loss_fn=mse_loss)
    trainer.prepare()
    record = trainer.train_step(batch)
    grads = [p.grad for p in sae.parameters() if p.grad is not None]
    return record["grad_norm"], torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])).item()


def test_gradient_clipping_is_applied(sae_factory, batches):
    batch = next(batches(1))
    pre_clip, applied = _step_and_grad_norm(sae_factory(), batch, grad_clip=1e-3)
    assert pre_clip > 1e-2  # so clipping to 1e-3 has something to do
    # clip_grad_norm_ scales by max_norm / (norm + 1e-6): the result is 1e-3 up to that guard
    assert applied == pytest.approx(1e-3, rel=1e-3)
    unclipped_pre, unclipped = _step_and_grad_norm(sae_factory(), batch, grad_clip=1e9)
    assert unclipped == pytest.approx(unclipped_pre, rel=1e-6)  # a huge limit leaves the gradient alone
    assert unclipped_pre == pytest.approx(pre_clip, rel=1e-6)


def test_bf16_autocast_runs_close_to_fp32(sae_factory, batches):
    losses = {}
    for amp in (None, "bf16"):
        result = train_sae(
            sae_factory(), batches(20), quiet(total_steps=20, lr=2e-3, amp_dtype=amp), loss_fn=mse_loss
        )
        losses[amp] = [r["loss"] for r in result.history]
        assert all(p.dtype == torch.float32 for p in result.sae.parameters())  # fp32 master weights
    assert losses["bf16"] != losses[None]  # autocast really ran in bf16
    # bf16 keeps 8 mantissa bits (~0.4% per rounding); after 20 steps the loss stays within 5%
    assert losses["bf16"][-1] == pytest.approx(losses[None][-1], rel=0.05)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="fp16 with a GradScaler is a CUDA path")
def test_fp16_with_grad_scaler_on_cuda(sae_factory, batches):
    sae = sae_factory().cuda()
    trainer = Trainer(sae, quiet(total_steps=10, lr=2e-3, amp_dtype="fp16"), loss_fn=mse_loss)
    assert trainer.scaler.is_enabled()
    result = trainer.fit(batches(10))
    assert all(p.dtype == torch.float32 for p in sae.parameters())
    assert result.history[-1]["loss"] < result.history[0]["loss"]


def test_amp_needs_fp32_parameters(sae_factory):
    with pytest.raises(ValueError, match="fp32 master weights"):
        Trainer(sae_factory().double(), quiet(total_steps=1, amp_dtype="bf16"), loss_fn=mse_loss)


def test_decoder_bias_initialised_from_the_first_batch(sae_factory, batches):
    first = next(batches(1))
    sae = sae_factory()
    train_sae(sae, batches(1), quiet(total_steps=1, lr=1e-9, b_dec_init="mean"), loss_fn=mse_loss)
    # one Adam step of lr 1e-9 moves b_dec by at most ~1e-9 from the batch mean
    assert torch.allclose(sae.b_dec, first.mean(dim=0), atol=1e-6)


def test_jsonl_log_has_one_line_per_step(sae_factory, batches, tmp_path):
    log = tmp_path / "logs" / "train.jsonl"
    config = quiet(total_steps=9, grad_clip=1.0, auxk_coefficient=0.1, log_path=str(log))
    result = train_sae(sae_factory(), batches(9), config, loss_fn=mse_loss)
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, 10))
    assert records == result.history
    for key in ("lr", "loss", "mse", "auxk", "l0", "dead_fraction", "grad_norm", "time_s", "tokens"):
        assert key in records[-1], key


# ------------------------------------------------------------------------------ NaN policy
def _digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_nan_batch_stops_naming_the_step_and_leaves_the_checkpoint(sae_factory, batches, tmp_path):
    seen = {}

    def stream():
        for index, batch in enumerate(batches(20), start=1):
            if index == 8:
                seen["before"] = _digest(latest_checkpoint(tmp_path))  # checkpoint step 5 exists by now
                batch = batch.clone()
                batch[3, 2] = float("nan")
            yield batch

    log = tmp_path / "log.jsonl"
    config = quiet(total_steps=20, checkpoint_every=5, checkpoint_dir=str(tmp_path), log_path=str(log))
    with pytest.raises(NonFiniteTrainingError, match=r"step 8: the batch contains 1 NaN/Inf") as error:
        train_sae(sae_factory(), stream(), config, loss_fn=mse_loss)
    assert (error.value.step, error.value.source) == (8, "batch")
    assert "step_00000005" in str(error.value) and "untouched" in str(error.value)
    latest = latest_checkpoint(tmp_path)
    assert latest.name == "step_00000005"
    assert _digest(latest) == seen["before"]
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["step_00000005"]
    assert len(log.read_text().splitlines()) == 7  # steps 1..7 were taken and logged


def test_nan_loss_stops_before_the_optimizer_step(sae_factory, batches):
    calls = []

    def loss_turning_nan(x, out, sae):
        calls.append(1)
        loss, logs = mse_loss(x, out, sae)
        return (loss * float("nan"), logs) if len(calls) == 3 else (loss, logs)

    sae = sae_factory()
    with pytest.raises(NonFiniteTrainingError, match="step 3: the loss is not finite") as error:
        Trainer(sae, quiet(total_steps=5), loss_fn=loss_turning_nan).fit(batches(5))
    assert error.value.source == "loss"
    assert all(torch.isfinite(p).all() for p in sae.parameters())  # the NaN never reached the weights


# ------------------------------------------------------------------------ pluggable steps
def test_custom_step_function_trains_on_dict_batches(sae_factory, batches):
    def two_view_step(sae, batch, observe_codes):
        out_a, out_b = sae(batch["a"]), sae(batch["b"])
        observe_codes(torch.cat([out_a.codes, out_b.codes]))
        cross = (out_a.x_hat - batch["b"]).pow(2).mean()
        own = (out_a.x_hat - batch["a"]).pow(2).mean()
        return own + cross, {"own": own.item(), "cross": cross.item()}

    dict_batches = ({"a": x, "b": x.flip(-1)} for x in batches(5))
    result = train_sae(sae_factory(), dict_batches, quiet(total_steps=5), step_fn=two_view_step)
    last = result.history[-1]
    assert last["loss"] == pytest.approx(last["own"] + last["cross"], rel=1e-6)  # float32 sum
    assert last["tokens"] == 5 * 64  # both views counted by observe_codes


def test_default_step_rejects_dict_batches(sae_factory, batches):
    with pytest.raises(TypeError, match="pass step_fn= for a multi-model SAE"):
        train_sae(sae_factory(), ({"a": x} for x in batches(1)), quiet(total_steps=1), loss_fn=mse_loss)


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (
            lambda s, b: train_sae(s, torch.zeros(4, 16), quiet(total_steps=1), loss_fn=mse_loss),
            TypeError,
            "split",
        ),
        (
            lambda s, b: Trainer(s, quiet(total_steps=1), loss_fn=mse_loss, step_fn=lambda *a: None),
            ValueError,
            "not both",
        ),
        (
            lambda s, b: train_sae(s, [torch.zeros(4, 8)], quiet(total_steps=1), loss_fn=mse_loss),
            ValueError,
            "16",
        ),
        (lambda s, b: Trainer(s, {"total_steps": 1}), TypeError, "must be a TrainConfig"),
    ],
    ids=["one-tensor", "loss-and-step", "wrong-width", "dict-config"],
)
def test_bad_calls_are_named(sae_factory, batches, call, error, message):
    with pytest.raises(error, match=message):
        call(sae_factory(), batches)
