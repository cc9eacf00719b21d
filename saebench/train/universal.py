"""Training a :class:`~saebench.sae.universal.UniversalSAE`: the authors' step, the paper's variant, losses.

The authors' code (``universal_sae/train.py::train_cross_prediction_saes``, ``uni_demo.py``; usae.md
§1.2-1.4), ``variant="code"``, per aligned batch ``{model: (n, d_i)}``:

1. draw one model ``i`` uniformly (Python ``random.Random(seed)``; the authors seed 10);
2. zero optimizer ``i``'s gradients; ``(pre, z) = Psi_i(x_i)``;
3. loss = sum over every model ``j`` of ``criterion(x_j, z @ D_j, pre, z, D_j)``;
4. one backward; clip the gradient norm of every model's parameters to ``grad_clip`` (1.0); step **only**
   optimizer ``i`` (AdamW, weight decay 1e-5) and **only** scheduler ``i``.

So each decoder learns from its own model's codes only; gradients reaching ``D_j`` (``j != i``) are cleared
when ``j`` is next chosen. Each scheduler is built for the whole run's length but advances only when its model
is chosen (about ``1/M`` of the steps): the **schedule quirk** (usae.md §1.4), kept here on purpose.

``variant="paper"`` (paper §3.2, App. A.1): the loss is the paper's Eq. 5-6 (a sum of Frobenius norms) unless
another is named, Adam without weight decay, the gradient of the summed loss updates encoder ``i`` and every
decoder, and every scheduler follows the global step.

This is its own small loop rather than :class:`~saebench.train.Trainer` with a ``step_fn``: the Trainer owns
one optimizer and one scheduler, and the step here must choose which of M optimizers and schedulers to step.
"""

from __future__ import annotations

import functools
import math
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch

from saebench.metrics.reconstruction import r2_global_mean
from saebench.sae.universal import UniversalSAE

__all__ = [
    "UniversalTrainConfig",
    "UniversalTrainResult",
    "topk_auxiliary_loss",
    "frobenius_loss",
    "cosine_warmup_lr",
    "train_universal_sae",
    "LOSSES",
    "VARIANTS",
]

VARIANTS = ("code", "paper")
# Criterion signature: (x, x_hat, pre_codes, codes, dictionary) -> scalar, as overcomplete's losses.
Criterion = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def topk_auxiliary_loss(
    x: torch.Tensor,
    x_hat: torch.Tensor,
    pre_codes: torch.Tensor,
    codes: torch.Tensor,
    dictionary: torch.Tensor,
    penalty: float = 0.1,
    power: int = 1,
) -> torch.Tensor:
    """``mean|r|^p + penalty * mean|r - a @ D|^p`` with ``r = x - x_hat`` (not detached) and ``a`` the
    ``m // 2`` largest entries per row of ``relu(pre_codes) - codes`` (the unchosen positive pre-activations),
    zeros elsewhere. ``x, x_hat (n, d)``, ``pre_codes, codes (n, m)``, ``dictionary (m, d)``.

    ``power=1``: overcomplete's ``top_k_auxiliary_loss_L1``, the USAE criterion (``loss_criterion: L1``);
    ``power=2``: ``top_k_auxiliary_loss`` (``L2``). Unlike Gao et al.'s AuxK it is not limited to dead latents
    (usae.md §1.3).
    """
    residual = x - x_hat
    unchosen = torch.relu(pre_codes) - codes
    top = unchosen.topk(unchosen.shape[1] // 2, dim=1)
    auxiliary_codes = torch.zeros_like(codes).scatter(1, top.indices, top.values)
    auxiliary = residual - auxiliary_codes @ dictionary
    return residual.abs().pow(power).mean() + penalty * auxiliary.abs().pow(power).mean()


def frobenius_loss(
    x: torch.Tensor,
    x_hat: torch.Tensor,
    pre_codes: torch.Tensor,
    codes: torch.Tensor,
    dictionary: torch.Tensor,
) -> torch.Tensor:
    """``||x - x_hat||_F`` (not squared): one term of the paper's Eq. 5-6 (usae.md §1.3)."""
    return torch.linalg.matrix_norm(x - x_hat)


LOSSES: dict[str, Criterion] = {
    "l1_aux": functools.partial(topk_auxiliary_loss, power=1),
    "l2_aux": functools.partial(topk_auxiliary_loss, power=2),
    "frobenius": frobenius_loss,
}


def cosine_warmup_lr(
    iteration: int,
    *,
    base_lr: float,
    final_lr: float,
    total_iters: int,
    warmup_iters: int,
    warmup_start_lr: float,
) -> float:
    """overcomplete's ``CosineScheduler`` value at ``iteration`` (0-based):
    ``linspace(warmup_start_lr, base_lr, warmup_iters)`` for ``iteration < warmup_iters``, then ``final +
    (base - final) (1 + cos(pi t / L)) / 2`` with ``t = iteration - warmup_iters``, ``L = total_iters -
    warmup_iters``; ``final_lr`` from ``total_iters`` on.
    """
    if iteration >= total_iters:
        return final_lr
    if iteration < warmup_iters:
        if warmup_iters == 1:
            return warmup_start_lr
        return warmup_start_lr + (base_lr - warmup_start_lr) * iteration / (warmup_iters - 1)
    t, length = iteration - warmup_iters, total_iters - warmup_iters
    return final_lr + 0.5 * (base_lr - final_lr) * (1.0 + math.cos(math.pi * t / length))


@dataclass(frozen=True)
class UniversalTrainConfig:
    """total_steps: batches to train on (the schedule length, as ``total_iters`` in the authors' code).
    warmup_steps: linear warm-up length (the authors: one epoch of batches). lr, final_lr, warmup_start_lr:
    the cosine schedule (3e-4 -> 1e-6, warm-up from 1e-6). weight_decay: AdamW's (1e-5; the paper variant
    uses Adam with none). grad_clip: per-model gradient-norm clip (1.0). loss: a key of :data:`LOSSES`,
    default ``l1_aux`` for ``variant="code"`` and ``frobenius`` for ``"paper"``. seed: the model-choice RNG
    only (the authors: 10; seed torch yourself for the weights). log_r2: log the chosen encoder's R^2 into
    every decoder.
    """

    total_steps: int
    warmup_steps: int = 0
    lr: float = 3e-4
    final_lr: float = 1e-6
    warmup_start_lr: float = 1e-6
    weight_decay: float = 1e-5
    grad_clip: float = 1.0
    variant: str = "code"
    loss: str | None = None
    seed: int = 10
    log_r2: bool = True

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"unknown variant {self.variant!r}; choose one of {VARIANTS}")
        if self.loss is not None and self.loss not in LOSSES:
            raise ValueError(f"unknown loss {self.loss!r}; choose one of {sorted(LOSSES)}")
        if self.total_steps <= 0 or not 0 <= self.warmup_steps <= self.total_steps:
            raise ValueError(f"need total_steps > 0 and 0 <= warmup_steps <= total_steps, got {self}")

    @property
    def criterion(self) -> Criterion:
        return LOSSES[self.loss or ("l1_aux" if self.variant == "code" else "frobenius")]

    def lr_at(self, iteration: int) -> float:
        return cosine_warmup_lr(
            iteration,
            base_lr=self.lr,
            final_lr=self.final_lr,
            total_iters=self.total_steps,
            warmup_iters=self.warmup_steps,
            warmup_start_lr=self.warmup_start_lr,
        )


@dataclass
class UniversalTrainResult:
    """usae: the trained model. choices: the model chosen at each step. scheduler_steps: ``{model: times its
    scheduler advanced}``. history: one dict per step (``loss``, ``model``, ``lr/<model>``,
    ``r2/<i>-><j>``)."""

    usae: UniversalSAE
    choices: list[str] = field(default_factory=list)
    scheduler_steps: dict[str, int] = field(default_factory=dict)
    history: list[dict[str, float | str]] = field(default_factory=list)


def _check_batch(usae: UniversalSAE, batch: dict[str, torch.Tensor]) -> None:
    if not isinstance(batch, dict) or set(batch) != set(usae.models):
        got = sorted(batch) if isinstance(batch, dict) else type(batch).__name__
        raise ValueError(
            f"each batch must be a dict with one tensor per model {list(usae.models)}, got {got}"
        )
    rows = {name: x.shape[0] for name, x in batch.items()}
    if len(set(rows.values())) != 1:
        raise ValueError(f"batch rows must be aligned across models (same n), got {rows}")


def _set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def train_universal_sae(
    usae: UniversalSAE, batches: Iterable[dict[str, torch.Tensor]], config: UniversalTrainConfig
) -> UniversalTrainResult:
    """Train ``usae`` on at most ``config.total_steps`` aligned dict batches (module docstring)."""
    models = usae.models
    paper = config.variant == "paper"
    optimizers = {
        name: torch.optim.Adam(usae.model_parameters(name), lr=config.lr_at(0))
        if paper
        else torch.optim.AdamW(
            usae.model_parameters(name), lr=config.lr_at(0), weight_decay=config.weight_decay
        )
        for name in models
    }
    rng = random.Random(config.seed)
    criterion = config.criterion
    result = UniversalTrainResult(usae, scheduler_steps=dict.fromkeys(models, 0))
    usae.train()
    for step, batch in enumerate(batches):
        if step >= config.total_steps:
            break
        _check_batch(usae, batch)
        chosen = models[rng.randint(0, len(models) - 1)]
        stepped = models if paper else (chosen,)
        for name in stepped:
            optimizers[name].zero_grad(set_to_none=True)
        out = usae(chosen, batch[chosen])
        loss = sum(
            criterion(batch[j], out.x_hat[j], out.pre_codes, out.codes, usae.dictionary(j)) for j in models
        )
        loss.backward()
        for name in models:
            torch.nn.utils.clip_grad_norm_(usae.model_parameters(name), config.grad_clip)
        log: dict[str, float | str] = {"step": step, "loss": float(loss.detach()), "model": chosen}
        for name in stepped:
            log[f"lr/{name}"] = optimizers[name].param_groups[0]["lr"]
            optimizers[name].step()
            result.scheduler_steps[name] += 1
            _set_lr(optimizers[name], config.lr_at(result.scheduler_steps[name]))
        if config.log_r2:
            for j in models:
                log[f"r2/{chosen}->{j}"] = r2_global_mean(batch[j], out.x_hat[j].detach())
        result.choices.append(chosen)
        result.history.append(log)
    return result
