"""Deterministic training of zoo models on Fashion-MNIST, and their test accuracy.

Determinism: every random draw of a run (weight init, the per-epoch shuffles, the flips) comes from
``settings.seed``: the init from torch's global RNG seeded inside :func:`torch.random.fork_rng` (the caller's
RNG state is left untouched), the rest from one ``torch.Generator``. On CPU, with the same torch build and the
same number of threads, the same config and seed give bitwise-identical weights.

The loop (:func:`optimise`) is shared by the classifiers (cross-entropy, :func:`train_classifier`) and the
CLIP-like image tower (contrastive loss, :mod:`saebench.zoo.clip_pair`): AdamW, linear warm-up then cosine
decay to zero, per-step learning rate.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from saebench.zoo.data import LabelledImages, normalize_pixels

__all__ = [
    "TrainSettings",
    "torch_threads",
    "lr_factor",
    "optimise",
    "train_classifier",
    "accuracy",
    "augment",
]

BatchLoss = Callable[[Tensor, torch.Generator], Tensor]
"""``batch_loss(example_indices, generator) -> scalar loss`` for one mini-batch."""


@dataclass(frozen=True)
class TrainSettings:
    """How a zoo model is trained (part of its cache key).

    Attributes:
        epochs: passes over the training images.
        batch_size: images per step (the last batch of an epoch may be smaller).
        lr: peak AdamW learning rate, reached after ``warmup_fraction`` of the steps, then cosine to zero.
        weight_decay: AdamW decay, applied to weight matrices and conv kernels (tensors with >= 2 dims).
        warmup_fraction: fraction of all steps spent warming up linearly from zero.
        hflip: flip each training image left-right with probability 1/2.
        train_images: use the first N training images (None: all 60,000).
        test_images: evaluate on the first N test images (None: all 10,000).
        seed: the seed of every random draw.
        threads: torch CPU threads while training; part of the config because float reductions split over a
            different number of threads round differently (1 thread: the same bits on any core count, and no
            spin-waiting when the machine is shared).
    """

    epochs: int = 3
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_fraction: float = 0.05
    hflip: bool = False
    train_images: int | None = None
    test_images: int | None = None
    seed: int = 0
    threads: int = 1

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "threads"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"TrainSettings.{name} must be an int >= 1, got {value!r}")
        if not self.lr > 0 or self.weight_decay < 0 or not 0 <= self.warmup_fraction < 1:
            raise ValueError(
                "TrainSettings needs lr > 0, weight_decay >= 0 and 0 <= warmup_fraction < 1; got "
                f"lr={self.lr}, weight_decay={self.weight_decay}, warmup_fraction={self.warmup_fraction}"
            )


@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(count)``, restoring the previous count after."""
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def lr_factor(step: int, total_steps: int, warmup_steps: int) -> float:
    """Multiplier of the peak learning rate at ``step`` (0-based): ``(step + 1) / warmup_steps`` during the
    warm-up, then ``(1 + cos(pi · t)) / 2`` with ``t`` going from 0 to 1 over the remaining steps."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * (step - warmup_steps) / decay_steps))


def augment(pixels: Tensor, hflip: bool, generator: torch.Generator) -> Tensor:
    """``(B, H, W)`` pixels, each flipped left-right with probability 1/2 when ``hflip`` (draws from
    ``generator`` only then)."""
    if not hflip:
        return pixels
    flip = torch.rand(len(pixels), generator=generator) < 0.5
    return torch.where(flip.view(-1, 1, 1), pixels.flip(-1), pixels)


def optimise(
    modules: Iterable[nn.Module],
    settings: TrainSettings,
    n_examples: int,
    batch_loss: BatchLoss,
    on_epoch: Callable[[int], dict[str, float]] | None = None,
) -> list[dict[str, float]]:
    """Minimise ``batch_loss`` over shuffled mini-batches of ``range(n_examples)`` for ``settings.epochs``.

    ``modules`` are put in train mode and their parameters trained together. Returns one log per epoch
    (``epoch``, mean ``loss``, ``seconds``), updated with what ``on_epoch(epoch)`` returns (called after each
    epoch, e.g. to measure a held-out accuracy; it must not draw random numbers from the training generator).
    """
    modules = list(modules)
    decay, no_decay = [], []
    for module in modules:
        module.train()
        for parameter in module.parameters():
            (decay if parameter.ndim >= 2 else no_decay).append(parameter)
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": settings.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=settings.lr,
    )
    steps_per_epoch = math.ceil(n_examples / settings.batch_size)
    total = steps_per_epoch * settings.epochs
    warmup = int(settings.warmup_fraction * total)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, total, warmup))
    generator = torch.Generator().manual_seed(settings.seed)
    history = []
    for epoch in range(settings.epochs):
        start, losses = time.perf_counter(), []
        order = torch.randperm(n_examples, generator=generator)
        for batch in order.split(settings.batch_size):
            loss = batch_loss(batch, generator)
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"zoo training diverged at epoch {epoch}: loss {loss.item()}; lower TrainSettings.lr"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
        history.append(
            {"epoch": epoch, "loss": sum(losses) / len(losses), "seconds": time.perf_counter() - start}
        )
        if on_epoch is not None:
            history[-1].update(on_epoch(epoch))
            for module in modules:
                module.train()
    for module in modules:
        module.eval()
    return history


def train_classifier(
    model: nn.Module, settings: TrainSettings, train: LabelledImages
) -> list[dict[str, float]]:
    """Train ``model`` (in place) with cross-entropy on ``train``; returns the per-epoch history."""

    def batch_loss(batch: Tensor, generator: torch.Generator) -> Tensor:
        pixels = augment(train.pixels[batch], settings.hflip, generator)
        return F.cross_entropy(model(normalize_pixels(pixels)), train.labels[batch])

    return optimise([model], settings, len(train), batch_loss)


def predict(score: Callable[[Tensor], Tensor], data: LabelledImages, batch_size: int = 1000) -> Tensor:
    """``(N,)`` argmax of ``score(images)`` (``(B, n_classes)``) over ``data``, under inference mode."""
    with torch.inference_mode():
        return torch.cat(
            [score(normalize_pixels(chunk)).argmax(dim=1) for chunk in data.pixels.split(batch_size)]
        )


def accuracy(score: Callable[[Tensor], Tensor], data: LabelledImages) -> float:
    """Fraction of ``data`` whose argmax score is the label."""
    return (predict(score, data) == data.labels).float().mean().item()
