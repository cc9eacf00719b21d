"""Probing SAE codes for known factors: binary probe tasks, latent truncation, logistic/XGBoost probes, F1.

Erdogan & Lucic (arXiv:2511.09432) compare SAEs by how well probes on their codes solve 180 Shapes tasks
(README ``04_shapes_probes.py``, ``--probe-trunc-lengths 8``) and GalaxyMNIST tasks with XGBoost and
logistic probes (``05_galaxy_probes.py --probe-trunc-length 8 16``), scored by F1 (summaries, note §2).
The task definitions and the meaning of "truncation" were not available (note §5.1); our design
(``reproductions/equivariant_sae/NOTES.md``):

* a task is a conjunction of ``factor == value`` conditions (:class:`ProbeTask`); positives are the rows
  meeting all of them. :func:`factor_probe_tasks` builds every single-factor one-vs-rest task and every
  pair of values of two factors;
* truncation to ``n`` latents keeps the ``n`` latents whose mean code differs most between positives and
  negatives of the training split (:func:`top_latents_by_mean_difference`, the "sparse probing" selection
  of Gurnee et al. 2023), so a probe sees at most ``n`` SAE features;
* probes are trained on a stratified split and scored by the binary F1 of the positive class on the rest.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

__all__ = [
    "PROBE_KINDS",
    "ProbeTask",
    "binary_f1",
    "factor_probe_tasks",
    "top_latents_by_mean_difference",
    "probe_f1",
    "run_probes",
]

PROBE_KINDS = ("logistic", "xgboost")


@dataclass(frozen=True)
class ProbeTask:
    """Binary task: positives are rows where every ``factor == value`` in ``conditions`` holds."""

    conditions: tuple[tuple[str, int], ...]

    @property
    def name(self) -> str:
        return "&".join(f"{factor}={value}" for factor, value in self.conditions)

    def targets(self, labels: Mapping[str, torch.Tensor]) -> np.ndarray:
        """``(n,)`` bool targets from ``{factor: (n,) int}`` labels."""
        missing = [f for f, _ in self.conditions if f not in labels]
        if missing:
            raise KeyError(f"task {self.name} needs factor(s) {missing}; labels have {sorted(labels)}")
        mask = np.ones(len(next(iter(labels.values()))), dtype=bool)
        for factor, value in self.conditions:
            mask &= np.asarray(labels[factor]) == value
        return mask


def factor_probe_tasks(
    n_values: Mapping[str, int], single: Sequence[str], pairs: Iterable[tuple[str, str]] = ()
) -> list[ProbeTask]:
    """Every ``factor == v`` task for ``factor`` in ``single`` and every ``(a == u) & (b == v)`` task for
    ``(a, b)`` in ``pairs``; ``n_values[factor]`` is the number of values."""
    tasks = [ProbeTask(((f, v),)) for f in single for v in range(n_values[f])]
    for a, b in pairs:
        for u, v in itertools.product(range(n_values[a]), range(n_values[b])):
            tasks.append(ProbeTask(((a, u), (b, v))))
    return tasks


def binary_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """F1 of the positive class, ``2 TP / (2 TP + FP + FN)``; 0 when there is no positive at all."""
    y_true, y_pred = np.asarray(y_true, dtype=bool), np.asarray(y_pred, dtype=bool)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true and y_pred must have the same shape, got {y_true.shape} and {y_pred.shape}")
    tp = int((y_true & y_pred).sum())
    wrong = int((y_true ^ y_pred).sum())  # FP + FN
    return 0.0 if tp == 0 else 2 * tp / (2 * tp + wrong)


def top_latents_by_mean_difference(codes: np.ndarray, targets: np.ndarray, n: int) -> np.ndarray:
    """Indices of the ``n`` latents with the largest ``|mean(codes | positive) - mean(codes | negative)|``
    (ties: lower index first). ``codes``: ``(rows, n_latents)``; ``targets``: ``(rows,)`` bool."""
    codes, targets = np.asarray(codes, dtype=np.float64), np.asarray(targets, dtype=bool)
    if codes.ndim != 2 or targets.shape != (codes.shape[0],):
        raise ValueError(
            f"codes must be (rows, n_latents) and targets (rows,), got {codes.shape}, {targets.shape}"
        )
    if not 0 < n <= codes.shape[1]:
        raise ValueError(f"n must be in [1, n_latents={codes.shape[1]}], got {n}")
    if targets.all() or not targets.any():
        raise ValueError("targets need both positives and negatives to rank latents")
    gap = np.abs(codes[targets].mean(axis=0) - codes[~targets].mean(axis=0))
    return np.argsort(-gap, kind="stable")[:n]


def _classifier(kind: str, seed: int):
    if kind == "logistic":
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(max_iter=1000, class_weight="balanced")
    if kind == "xgboost":
        from xgboost import XGBClassifier

        return XGBClassifier(n_estimators=50, max_depth=3, random_state=seed, n_jobs=1, verbosity=0)
    raise ValueError(f"unknown probe kind {kind!r}; choose one of {PROBE_KINDS}")


def _split(targets: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    index = np.arange(len(targets))
    return train_test_split(index, test_size=test_fraction, random_state=seed, stratify=targets)


def probe_f1(
    codes: np.ndarray,
    targets: np.ndarray,
    kind: str = "logistic",
    n_latents: int | None = None,
    test_fraction: float = 0.25,
    seed: int = 0,
) -> float:
    """Test-split F1 of a ``kind`` probe trained on ``codes`` ``(rows, n_latents)`` for bool ``targets``,
    after truncation to ``n_latents`` latents chosen on the training split (``None``: all latents)."""
    codes, targets = np.asarray(codes, dtype=np.float64), np.asarray(targets, dtype=bool)
    if not np.isfinite(codes).all():
        raise ValueError("codes contain NaN/Inf values")
    train, test = _split(targets, test_fraction, seed)
    columns = (
        np.arange(codes.shape[1])
        if n_latents is None
        else top_latents_by_mean_difference(codes[train], targets[train], n_latents)
    )
    probe = _classifier(kind, seed).fit(codes[train][:, columns], targets[train])
    return binary_f1(targets[test], probe.predict(codes[test][:, columns]))


def run_probes(
    codes: torch.Tensor | np.ndarray,
    labels: Mapping[str, torch.Tensor],
    tasks: Sequence[ProbeTask],
    trunc_lengths: Sequence[int],
    kinds: Sequence[str] = PROBE_KINDS,
    seed: int = 0,
) -> list[dict[str, object]]:
    """One row ``{task, kind, trunc_length, f1}`` per task x kind x truncation length (the layout of the
    authors' ``probe_results/results_<n>.csv``). Tasks with fewer than 4 positives are skipped (a
    stratified split needs positives on both sides)."""
    codes = codes.detach().cpu().numpy() if isinstance(codes, torch.Tensor) else np.asarray(codes)
    rows = []
    for task in tasks:
        targets = task.targets(labels)
        if targets.sum() < 4 or (~targets).sum() < 4:
            continue
        for kind, n in itertools.product(kinds, trunc_lengths):
            f1 = probe_f1(codes, targets, kind=kind, n_latents=min(n, codes.shape[1]), seed=seed)
            rows.append({"task": task.name, "kind": kind, "trunc_length": n, "f1": f1})
    return rows
