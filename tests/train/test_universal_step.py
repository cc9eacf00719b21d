"""The USAE training step (usae.md §1.2-1.4): one model per batch, only its optimizer and scheduler stepped,
the L1 + 0.1 auxiliary loss, the schedule quirk, and the paper variant."""

from __future__ import annotations

import math

import pytest
import torch

from saebench.data.multimodel import MultiModelWorld, MultiModelWorldConfig
from saebench.metrics.universality import cross_r2_matrix
from saebench.sae.universal import UniversalSAE, UniversalSAEConfig
from saebench.train.universal import (
    UniversalTrainConfig,
    cosine_warmup_lr,
    frobenius_loss,
    topk_auxiliary_loss,
    train_universal_sae,
)

DIMS = {"a": 5, "b": 4, "c": 3}


@pytest.fixture(autouse=True)
def single_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _usae() -> UniversalSAE:
    torch.manual_seed(0)
    return UniversalSAE(UniversalSAEConfig(DIMS, 8, k=2))


def _batches(n: int):
    g = torch.Generator().manual_seed(1)
    return [{name: torch.randn(16, d, generator=g) for name, d in DIMS.items()} for _ in range(n)]


def test_auxiliary_loss_by_hand():
    x = torch.tensor([[1.0, 2.0]])
    x_hat = torch.tensor([[0.5, 2.0]])
    pre = torch.tensor([[3.0, -1.0, 0.4, 0.2]])
    codes = torch.tensor([[3.0, 0.0, 0.0, 0.0]])
    dictionary = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    # residual r = (0.5, 0); relu(pre) - codes = (0, 0, 0.4, 0.2); the top m // 2 = 2 keep (0.4, 0.2) at
    # latents 2 and 3, so a @ D = (0.4, 0.2); r - a @ D = (0.1, -0.2).
    # L1: mean|r| = 0.25; aux = mean(0.1, 0.2) = 0.15; loss = 0.25 + 0.1 * 0.15 = 0.265.
    loss = topk_auxiliary_loss(x, x_hat, pre, codes, dictionary)
    assert loss.item() == pytest.approx(0.265)
    # L2: mean r^2 = 0.125; aux = mean(0.01, 0.04) = 0.025; loss = 0.125 + 0.0025 = 0.1275.
    assert topk_auxiliary_loss(x, x_hat, pre, codes, dictionary, power=2).item() == pytest.approx(0.1275)
    # Frobenius: ||(0.5, 0)||_F = 0.5.
    assert frobenius_loss(x, x_hat, pre, codes, dictionary).item() == pytest.approx(0.5)


def test_cosine_warmup_lr_matches_overcomplete_schedule():
    kw = {"base_lr": 1.0, "final_lr": 0.0, "total_iters": 10, "warmup_iters": 3, "warmup_start_lr": 0.1}
    # warm-up: linspace(0.1, 1.0, 3) = 0.1, 0.55, 1.0; cosine over L = 7: t = 0 -> 1, t = 7 would be 0.
    assert [cosine_warmup_lr(i, **kw) for i in range(3)] == pytest.approx([0.1, 0.55, 1.0])
    assert cosine_warmup_lr(3, **kw) == pytest.approx(1.0)
    assert cosine_warmup_lr(3 + 3.5, **kw) == pytest.approx(0.5)  # half-way: (1 + cos(pi / 2)) / 2
    assert cosine_warmup_lr(10, **kw) == 0.0


def test_schedule_quirk_leaves_lr_near_078_of_base_for_three_models():
    # usae.md §1.4: each scheduler advances ~1/3 of the run, warm-up is 1/30 of it, so it stops at
    # progress (1/3 - 1/30) / (1 - 1/30) = 0.3103, where final + (base - final)(1 + cos(0.3103 pi)) / 2
    # = 0.7805 base.
    total = 3000
    lr = cosine_warmup_lr(
        total // 3, base_lr=1.0, final_lr=0.0, total_iters=total, warmup_iters=100, warmup_start_lr=0.0
    )
    assert lr == pytest.approx(0.5 * (1 + math.cos(math.pi * 900 / 2900)))
    assert lr == pytest.approx(0.78, abs=0.005)


def test_code_variant_updates_only_the_chosen_model():
    usae = _usae()
    batches = _batches(6)
    before = {name: [p.detach().clone() for p in usae.model_parameters(name)] for name in DIMS}
    cfg = UniversalTrainConfig(total_steps=1, lr=1e-2, warmup_steps=0, seed=3)
    result = train_universal_sae(usae, batches, cfg)
    (chosen,) = result.choices
    for name in DIMS:
        changed = [
            not torch.equal(p, q) for p, q in zip(usae.model_parameters(name), before[name], strict=True)
        ]
        assert all(changed) if name == chosen else not any(changed), name
    assert result.scheduler_steps == {n: int(n == chosen) for n in DIMS}


def test_schedulers_advance_only_when_chosen():
    usae = _usae()
    cfg = UniversalTrainConfig(total_steps=30, lr=1e-2, warmup_steps=3, seed=10)
    result = train_universal_sae(usae, _batches(30), cfg)
    assert result.scheduler_steps == {n: result.choices.count(n) for n in DIMS}
    assert set(result.choices) == set(DIMS)  # 30 uniform draws over 3 models (seed 10) reach all three
    last_lr = {}
    for h in result.history:
        last_lr[h["model"]] = h[f"lr/{h['model']}"]
        assert all(f"lr/{n}" not in h for n in DIMS if n != h["model"])
    for n in DIMS:  # the lr used at a model's c-th step is the schedule value at c - 1 (its own counter)
        assert last_lr[n] == pytest.approx(cfg.lr_at(result.choices.count(n) - 1))


def test_choices_follow_python_random_with_the_seed():
    import random

    rng = random.Random(10)
    expected = [("a", "b", "c")[rng.randint(0, 2)] for _ in range(12)]
    result = train_universal_sae(_usae(), _batches(12), UniversalTrainConfig(total_steps=12, seed=10))
    assert result.choices == expected


def test_paper_variant_updates_chosen_encoder_and_every_decoder():
    usae = _usae()
    before = {name: [p.detach().clone() for p in usae.model_parameters(name)] for name in DIMS}
    cfg = UniversalTrainConfig(total_steps=1, lr=1e-2, variant="paper")
    assert cfg.criterion is frobenius_loss
    result = train_universal_sae(usae, _batches(1), cfg)
    assert result.scheduler_steps == dict.fromkeys(DIMS, 1)  # every schedule follows the global step
    (chosen,) = result.choices
    for name in DIMS:
        assert not torch.equal(usae.dictionaries[name].detach(), before[name][-1]), name
        encoder_changed = not torch.equal(usae.encoders[name].linear.weight.detach(), before[name][0])
        assert encoder_changed == (name == chosen)


def test_training_reduces_the_loss_and_logs_r2():
    usae = _usae()
    batches = _batches(1) * 60  # the same batch: the loss must fall
    result = train_universal_sae(usae, batches, UniversalTrainConfig(total_steps=60, lr=3e-2, warmup_steps=2))
    first = [h["loss"] for h in result.history[:6]]
    last = [h["loss"] for h in result.history[-6:]]
    assert sum(last) < 0.8 * sum(first)  # a clear fall, not noise: 20% on a fixed batch
    h = result.history[-1]
    assert all(f"r2/{h['model']}->{j}" in h for j in DIMS)


def test_bad_batches_and_options_are_named():
    with pytest.raises(ValueError, match="one tensor per model"):
        train_universal_sae(_usae(), [{"a": torch.zeros(2, 5)}], UniversalTrainConfig(total_steps=1))
    bad = {"a": torch.zeros(2, 5), "b": torch.zeros(3, 4), "c": torch.zeros(2, 3)}
    with pytest.raises(ValueError, match="aligned"):
        train_universal_sae(_usae(), [bad], UniversalTrainConfig(total_steps=1))
    with pytest.raises(ValueError, match="unknown variant"):
        UniversalTrainConfig(total_steps=1, variant="x")
    with pytest.raises(ValueError, match="unknown loss"):
        UniversalTrainConfig(total_steps=1, loss="x")


@pytest.mark.parametrize(("variant", "loss"), [("code", "l1_aux"), ("paper", "frobenius")])
def test_both_variants_learn_positive_cross_r2(variant, loss):
    # usae.md §7.1 item 3: the code's loss and the paper's both reach cross-model R^2 > 0 on a planted world.
    world = MultiModelWorld(
        MultiModelWorldConfig(
            {"a": 16, "b": 12, "c": 10},
            n_universal=6,
            n_shared_per_pair=1,
            n_private_per_model=1,
            k=2,
            seed=0,
        )
    )
    torch.manual_seed(0)
    usae = UniversalSAE(UniversalSAEConfig(world.config.model_dims, 32, k=2))
    cfg = UniversalTrainConfig(
        total_steps=150, warmup_steps=5, lr=2e-2, final_lr=2e-4, variant=variant, loss=loss
    )
    train_universal_sae(usae, world.batches(128, 150), cfg)
    table = cross_r2_matrix(usae, world.sample(2048).x)
    off_diagonal = table[~torch.eye(3, dtype=torch.bool)]
    assert (off_diagonal > 0).all(), table
