"""Linear-probe agreement of original and reconstructed embeddings (MSAE ``linear_eval.py``, msae.md §2.7).

A linear probe is trained on the *original* embeddings (:func:`train_linear_probe`); the SAE is scored by how
much the probe's predictions change when it reads reconstructions instead:

- **KL** (:func:`probe_kl`): per sample ``KL(p_orig || p_recon)`` with ``p = softmax(probe(.))``
  (the code's ``kl_div(log p_recon, p_orig)``), reported as mean and std over samples.
- **"Accuracy"** (:func:`probe_agreement`): the percentage of samples whose argmax class is the same for
  the original and the reconstruction. It is agreement with the probe, *not* accuracy against labels.

Probe inputs are L2-normalised rows (:func:`probe_inputs`); the authors standardise first (msae.md §2.1).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from saebench.metrics.validation import as_rows, paired_rows

__all__ = ["probe_inputs", "probe_kl", "probe_agreement", "macro_f1", "ProbeTraining", "train_linear_probe"]


def probe_inputs(x: torch.Tensor) -> torch.Tensor:
    """``(n, d)`` rows scaled to unit L2 norm (float32), the probe's input (MSAE ``linear_eval.py``)."""
    rows = as_rows(x, "x")
    norms = rows.norm(dim=1, keepdim=True)
    if (norms == 0).any():
        raise ValueError("x has an all-zero row, which cannot be L2-normalised for the probe")
    return (rows / norms).float()


def probe_kl(logits_original: torch.Tensor, logits_reconstructed: torch.Tensor) -> tuple[float, float]:
    """``(mean, std)`` over samples of ``KL(softmax(l_orig) || softmax(l_recon))``; logits ``(n, classes)``.
    The std is unbiased (0 for one sample)."""
    orig, recon = paired_rows(logits_original, logits_reconstructed)
    log_p, log_q = orig.log_softmax(dim=1), recon.log_softmax(dim=1)
    per_sample = (log_p.exp() * (log_p - log_q)).sum(dim=1)
    std = float(per_sample.std()) if per_sample.numel() > 1 else 0.0
    return float(per_sample.mean()), std


def probe_agreement(logits_original: torch.Tensor, logits_reconstructed: torch.Tensor) -> float:
    """Percentage (0-100) of samples whose argmax class agrees between the two ``(n, classes)`` logits."""
    orig, recon = paired_rows(logits_original, logits_reconstructed)
    return 100.0 * float((orig.argmax(dim=1) == recon.argmax(dim=1)).to(torch.float64).mean())


@dataclass(frozen=True)
class ProbeTraining:
    """MSAE ``linear_eval.py`` defaults: AdamW at ``lr``, ``batch_size`` rows, up to ``epochs`` epochs,
    ReduceLROnPlateau (max, factor 0.5, ``patience``) and early stopping (``patience``) on the macro-F1 of the
    evaluation set, keeping the best state; ``seed`` seeds the init and the shuffles."""

    lr: float = 1e-3
    batch_size: int = 512
    epochs: int = 100
    patience: int = 5
    seed: int = 42


def macro_f1(labels: torch.Tensor, predicted: torch.Tensor) -> float:
    """Mean over the classes present in ``labels`` or ``predicted`` (both ``(n,)`` ints) of
    ``F1_c = 2 TP / (2 TP + FP + FN)``: scikit-learn's ``f1_score(average="macro")``, the probe's selection
    criterion in MSAE ``linear_eval.py``."""
    classes = torch.unique(torch.cat([labels, predicted]))
    hit = labels[:, None] == classes
    said = predicted[:, None] == classes
    tp = (hit & said).sum(0)
    return float((2 * tp / (hit.sum(0) + said.sum(0))).mean())


def _probe_macro_f1(probe: nn.Linear, x: torch.Tensor, labels: torch.Tensor) -> float:
    with torch.no_grad():
        return macro_f1(labels, probe(x).argmax(dim=1))


def train_linear_probe(
    train_x: torch.Tensor,
    train_labels: torch.Tensor,
    eval_x: torch.Tensor,
    eval_labels: torch.Tensor,
    n_classes: int,
    options: ProbeTraining = ProbeTraining(),
) -> nn.Linear:
    """Train ``nn.Linear(d, n_classes)`` on :func:`probe_inputs` rows ``(n, d)`` with integer labels ``(n,)``
    (cross-entropy), selecting the epoch with the best evaluation macro-F1; see :class:`ProbeTraining`."""
    if train_x.shape[0] != train_labels.shape[0] or eval_x.shape[0] != eval_labels.shape[0]:
        raise ValueError("each probe input needs one label per row")
    generator = torch.Generator().manual_seed(options.seed)
    torch.manual_seed(options.seed)
    probe = nn.Linear(train_x.shape[1], n_classes)
    optimizer = torch.optim.AdamW(probe.parameters(), lr=options.lr)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="max", factor=0.5, patience=options.patience
    )
    best_f1, best_state, stale = -1.0, copy.deepcopy(probe.state_dict()), 0
    for _ in range(options.epochs):
        order = torch.randperm(train_x.shape[0], generator=generator)
        for idx in order.split(options.batch_size):
            optimizer.zero_grad()
            nn.functional.cross_entropy(probe(train_x[idx]), train_labels[idx]).backward()
            optimizer.step()
        f1 = _probe_macro_f1(probe, eval_x, eval_labels)
        scheduler.step(f1)
        if f1 > best_f1:
            best_f1, best_state, stale = f1, copy.deepcopy(probe.state_dict()), 0
        else:
            stale += 1
            if stale >= options.patience:
                break
    probe.load_state_dict(best_state)
    return probe
