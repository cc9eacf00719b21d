"""Dead-latent windows; AuxK (hand-computed values, zero/positive, gradient to dead latents), ghost grads."""

from __future__ import annotations

import pytest
import torch

from saebench.train import TrainConfig, Trainer
from saebench.train.auxiliary import DeadLatentTracker, auxk_loss, fired_latents, ghost_grads_loss
from saebench.train.losses import mse_loss


def test_dead_window_counts_tokens_since_last_firing():
    tracker = DeadLatentTracker(3, window_tokens=30)
    assert tracker.dead_mask.tolist() == [False, False, False]  # nothing seen yet: nothing dead
    pattern = [[1, 1, 0], [0, 1, 0], [0, 1, 0], [0, 1, 0], [1, 0, 0]]
    dead = []
    for fired in pattern:
        tracker.update(torch.tensor(fired, dtype=torch.bool), n_tokens=10)
        dead.append(tracker.dead_mask.tolist())
    # counters after each batch of 10: [0,0,10] [10,0,20] [20,0,30] [30,0,40] [0,10,50]; dead means >= 30
    assert dead == [
        [False, False, False],
        [False, False, False],
        [False, False, True],  # latent 2 never fired: dead once 30 tokens are seen
        [True, False, True],  # latent 0 last fired 30 tokens ago
        [False, False, True],  # latent 0 fired again: alive
    ]
    assert tracker.tokens_seen == 50
    assert tracker.dead_fraction() == pytest.approx(1 / 3)


def test_tracker_state_round_trips():
    tracker = DeadLatentTracker(4, window_tokens=5)
    tracker.update(torch.tensor([True, False, False, True]), 7)
    copy = DeadLatentTracker(4, window_tokens=1)
    copy.load_state_dict(tracker.state_dict())
    assert torch.equal(copy.tokens_since_fired, tracker.tokens_since_fired)
    assert (copy.window_tokens, copy.tokens_seen) == (5, 7)
    with pytest.raises(ValueError, match="for 4 latents"):
        DeadLatentTracker(3, 5).load_state_dict(tracker.state_dict())


def test_fired_latents_over_leading_dims():
    codes = torch.zeros(2, 3, 4)
    codes[1, 2, 3] = 0.5
    codes[0, 0, 1] = 2.0
    assert fired_latents(codes).tolist() == [False, True, False, True]


# ------------------------------------------------------------------------------- AuxK
PRE = torch.tensor([[1.0, -2.0, 3.0], [0.5, 2.0, -1.0]])
W_DEC = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
RESIDUAL = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
DEAD = torch.tensor([True, True, False])
# Denominator: the residual's per-dimension mean is [1, 0.5]; deviations [[1,-.5],[-1,.5]]: mean square 0.625


def test_auxk_hand_computed_top1():
    # top-1 dead pre-activation per row: row 0 latent 0 (1.0), row 1 latent 1 (2.0) -> e_hat = [[1,0],[0,2]]
    # squared errors vs the residual [[1,0],[0,1]] -> mean 0.5; 0.5 / 0.625 = 0.8
    assert auxk_loss(RESIDUAL, PRE, DEAD, W_DEC, k_aux=1).item() == pytest.approx(0.8, abs=1e-6)


def test_auxk_k_is_capped_by_the_number_of_dead_latents_and_negatives_are_relu_d():
    # both dead latents, ReLU'd: row 0 [1, 0] -> [1,0]; row 1 [0.5, 2] -> [0.5, 2]
    # errors [[-1,0],[0.5,1]] -> squares [1,0,.25,1], mean 0.5625; / 0.625 = 0.9
    for k_aux in (2, 5):
        assert auxk_loss(RESIDUAL, PRE, DEAD, W_DEC, k_aux=k_aux).item() == pytest.approx(0.9, abs=1e-6)


def test_auxk_is_zero_without_dead_latents():
    value = auxk_loss(RESIDUAL, PRE, torch.zeros(3, dtype=torch.bool), W_DEC, k_aux=2)
    assert value.item() == 0.0


def test_auxk_of_a_constant_residual_is_zero_and_nan_free():
    pre = PRE.clone().requires_grad_(True)
    value = auxk_loss(torch.ones(2, 2), pre, DEAD, W_DEC, k_aux=1)
    value.backward()
    assert value.item() == 0.0
    assert torch.isfinite(pre.grad).all()


def _suppress_latents(sae, latents: slice) -> None:
    """Make ``latents`` lose every top-k contest (tiny encoder columns) so they go dead, while their
    pre-activations stay positive on about half the tokens (so AuxK has something to select)."""
    with torch.no_grad():
        sae.W_enc[:, latents] *= 1e-3


def _one_step_encoder_grad(sae, batch, config):
    trainer = Trainer(sae, config, loss_fn=mse_loss)
    trainer.prepare()
    record = trainer.train_step(batch)
    return record, sae.W_enc.grad.clone()


def test_auxk_is_positive_and_feeds_dead_latents(sae_factory, batches):
    batch = next(batches(1, batch_size=64))
    dead = slice(32, 64)
    config = dict(total_steps=1, dead_window_tokens=64, progress=False)
    with_aux = sae_factory("topk")
    _suppress_latents(with_aux, dead)
    record, grad = _one_step_encoder_grad(with_aux, batch, TrainConfig(auxk_coefficient=1 / 32, **config))
    without = sae_factory("topk")
    _suppress_latents(without, dead)
    _, grad_plain = _one_step_encoder_grad(without, batch, TrainConfig(**config))

    assert record["dead_fraction"] >= 0.5  # the 32 suppressed latents never made the top 4
    assert record["auxk"] > 0
    assert record["loss"] == pytest.approx(record["mse"] + record["auxk"] / 32, rel=1e-6)  # float32 sum
    assert grad_plain[:, dead].abs().max() == 0  # TopK alone gives dead latents no gradient
    assert grad[:, dead].abs().max() > 0


def test_auxk_changes_nothing_while_no_latent_is_dead(sae_factory, batches, same_state):
    from saebench.train import train_sae

    runs = []
    for coefficient in (0.0, 1 / 32):
        config = TrainConfig(total_steps=5, auxk_coefficient=coefficient, progress=False)  # 10M-token window
        runs.append(train_sae(sae_factory("topk"), batches(5), config, loss_fn=mse_loss))
    assert all(r["auxk"] == 0.0 and r["dead_fraction"] == 0.0 for r in runs[1].history)
    same_state(runs[0].sae, runs[1].sae)


# -------------------------------------------------------------------------- ghost grads
def test_ghost_grads_value_matches_the_normalised_reconstruction_error():
    torch.manual_seed(0)
    x, x_hat = torch.randn(8, 5), torch.randn(8, 5)
    pre = torch.randn(8, 6, requires_grad=True)
    w_dec = torch.randn(6, 5)
    dead = torch.tensor([True, False, True, False, False, True])
    value = ghost_grads_loss(x, x_hat, pre, dead, w_dec)
    recon = ((x_hat - x) ** 2 / x.norm(dim=-1, keepdim=True)).mean()
    # value = mean(recon_e * ghost_e / (ghost_e + 1e-6)): equal to mean(recon_e) up to the 1e-6 guard
    assert value.item() == pytest.approx(recon.item(), rel=1e-3)
    value.backward()
    assert pre.grad[:, dead].abs().sum() > 0
    assert pre.grad[:, ~dead].abs().sum() == 0  # only dead latents take part


def test_ghost_grads_zero_without_dead_latents():
    value = ghost_grads_loss(
        torch.ones(2, 2), torch.zeros(2, 2), PRE, torch.zeros(3, dtype=torch.bool), W_DEC
    )
    assert value.item() == 0.0


def test_ghost_grads_reach_dead_relu_latents_in_training(sae_factory, batches):
    batch = next(batches(1, batch_size=64))
    dead = slice(48, 64)
    config = dict(total_steps=1, dead_window_tokens=64, progress=False)
    grads = {}
    for ghost in (False, True):
        sae = sae_factory("relu")
        with torch.no_grad():
            sae.b_enc[dead] = -100.0  # never fire under ReLU
        record, grads[ghost] = _one_step_encoder_grad(sae, batch, TrainConfig(ghost_grads=ghost, **config))
    assert record["ghost_grads"] > 0
    assert grads[False][:, dead].abs().max() == 0
    assert grads[True][:, dead].abs().max() > 0
