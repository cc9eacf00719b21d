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

Speed: :func:`run_probes` ranks latents for every task at once and fits every task's logistic probe in one
batched Newton solve (:func:`fit_logistic_batched`, the objective of scikit-learn's ``LogisticRegression``
with balanced class weights; parity test in ``tests/metrics/test_probing.py``); XGBoost probes are fitted
one task at a time on one thread.
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
    "top_latents_per_task",
    "balanced_sample_weights",
    "fit_logistic_batched",
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


def top_latents_per_task(codes: np.ndarray, targets: np.ndarray, train: np.ndarray, n: int) -> np.ndarray:
    """``(tasks, n)`` indices of the ``n`` latents with the largest ``|mean(codes | positive) -
    mean(codes | negative)|`` over each task's training rows (ties: lower index first).

    codes: ``(rows, n_latents)``; targets, train: ``(rows, tasks)`` bool (``train`` marks the rows each task
    ranks on; each task needs a positive and a negative among them)."""
    codes = np.asarray(codes, dtype=np.float64)
    targets, train = np.asarray(targets, dtype=bool), np.asarray(train, dtype=bool)
    if codes.ndim != 2 or targets.ndim != 2 or targets.shape[0] != codes.shape[0]:
        raise ValueError(
            f"codes must be (rows, n_latents) and targets (rows, tasks), got {codes.shape}, {targets.shape}"
        )
    if train.shape != targets.shape:
        raise ValueError(f"train must have the shape of targets {targets.shape}, got {train.shape}")
    if not 0 < n <= codes.shape[1]:
        raise ValueError(f"n must be in [1, n_latents={codes.shape[1]}], got {n}")
    positive = (targets & train).astype(np.float64)  # (rows, tasks)
    negative = (~targets & train).astype(np.float64)
    if (positive.sum(axis=0) == 0).any() or (negative.sum(axis=0) == 0).any():
        raise ValueError("targets need both positives and negatives to rank latents")
    gap = np.abs(
        positive.T @ codes / positive.sum(axis=0)[:, None]
        - negative.T @ codes / negative.sum(axis=0)[:, None]
    )
    return np.argsort(-gap, axis=1, kind="stable")[:, :n]


def top_latents_by_mean_difference(codes: np.ndarray, targets: np.ndarray, n: int) -> np.ndarray:
    """Indices of the ``n`` latents with the largest ``|mean(codes | positive) - mean(codes | negative)|``
    (ties: lower index first). ``codes``: ``(rows, n_latents)``; ``targets``: ``(rows,)`` bool."""
    targets = np.asarray(targets, dtype=bool)
    if targets.ndim != 1:
        raise ValueError(f"codes must be (rows, n_latents) and targets (rows,), got targets {targets.shape}")
    return top_latents_per_task(codes, targets[:, None], np.ones((len(targets), 1), dtype=bool), n)[0]


def balanced_sample_weights(targets: np.ndarray, train: np.ndarray) -> np.ndarray:
    """``(rows, tasks)`` weights ``n_train / (2 n_class)`` on each task's training rows (scikit-learn's
    ``class_weight="balanced"`` for two classes), 0 on the other rows."""
    targets, train = np.asarray(targets, dtype=bool), np.asarray(train, dtype=bool)
    n_train = train.sum(axis=0)
    n_pos, n_neg = (targets & train).sum(axis=0), (~targets & train).sum(axis=0)
    if (n_pos == 0).any() or (n_neg == 0).any():
        raise ValueError("every task needs training positives and negatives")
    weights = np.where(targets, n_train / (2.0 * n_pos), n_train / (2.0 * n_neg))
    return np.where(train, weights, 0.0)


def _logistic_objective(x, y, weight, coef, c):
    """``0.5 ||w||² + c Σ_i s_i log(1 + exp(-y_i (x_i w + b)))`` per task (``y`` in ±1); shapes as below."""
    margin = y * (torch.einsum("trn,tn->tr", x, coef[:, :-1]) + coef[:, -1:])
    return 0.5 * coef[:, :-1].pow(2).sum(-1) + c * (weight * torch.nn.functional.softplus(-margin)).sum(-1)


def fit_logistic_batched(
    x: np.ndarray,
    targets: np.ndarray,
    weight: np.ndarray,
    c: float = 1.0,
    max_iter: int = 100,
    tol: float = 1e-9,
) -> tuple[np.ndarray, np.ndarray]:
    """L2-penalised logistic regression for many tasks at once, by damped Newton steps (float64).

    Minimises, per task ``t``, ``0.5 ||w_t||² + c Σ_i s_ti log(1 + exp(-y_ti (x_ti · w_t + b_t)))`` with
    ``y = ±1`` and the intercept ``b_t`` not penalised: the objective of scikit-learn's
    ``LogisticRegression(C=c)`` with sample weights ``s`` (``class_weight="balanced"`` is
    :func:`balanced_sample_weights`). A step is halved until the objective does not increase (the objective
    is strictly convex, so this converges to the same optimum as scikit-learn's solvers).

    x: ``(tasks, rows, n)``; targets: ``(tasks, rows)`` bool; weight: ``(tasks, rows)`` >= 0 (0 drops a row).
    Returns ``coef`` ``(tasks, n)`` and ``intercept`` ``(tasks,)``.
    """
    xt = torch.as_tensor(np.asarray(x, dtype=np.float64))
    if xt.ndim != 3:
        raise ValueError(f"x must be (tasks, rows, n), got shape {tuple(xt.shape)}")
    y = torch.as_tensor(np.asarray(targets, dtype=bool)).double() * 2 - 1
    s = torch.as_tensor(np.asarray(weight, dtype=np.float64))
    if y.shape != xt.shape[:2] or s.shape != xt.shape[:2]:
        raise ValueError(f"targets and weight must be (tasks, rows) = {tuple(xt.shape[:2])}")
    tasks, _, n = xt.shape
    xa = torch.cat([xt, torch.ones_like(xt[..., :1])], dim=-1)  # (tasks, rows, n + 1), last column: intercept
    penalty = torch.ones(n + 1, dtype=torch.float64)
    penalty[-1] = 0.0
    coef = torch.zeros(tasks, n + 1, dtype=torch.float64)
    objective = _logistic_objective(xt, y, s, coef, c)
    for _ in range(max_iter):
        z = torch.einsum("trn,tn->tr", xa, coef)
        p = torch.sigmoid(z)  # P(y = +1)
        residual = c * s * (p - (y > 0).double())
        grad = penalty * coef + torch.einsum("tr,trn->tn", residual, xa)
        curvature = c * s * p * (1 - p)
        hessian = torch.einsum("trn,tr,trm->tnm", xa, curvature, xa) + torch.diag_embed(
            penalty.expand(tasks, -1)
        )
        step = torch.linalg.solve(hessian + 1e-12 * torch.eye(n + 1, dtype=torch.float64), grad)
        scale = torch.ones(tasks, 1, dtype=torch.float64)
        for _ in range(30):  # halve each task's step until its objective does not increase
            trial = _logistic_objective(xt, y, s, coef - scale * step, c)
            worse = trial > objective + 1e-12 * objective.abs()
            if not worse.any():
                break
            scale = torch.where(worse[:, None], scale / 2, scale)
        coef = coef - scale * step
        objective = _logistic_objective(xt, y, s, coef, c)
        if float((scale * step).abs().max()) < tol:
            break
    return coef[:, :-1].numpy(), coef[:, -1].numpy()


def _xgboost(seed: int):
    from xgboost import XGBClassifier

    return XGBClassifier(n_estimators=50, max_depth=3, random_state=seed, n_jobs=1, verbosity=0)


def _split(targets: np.ndarray, test_fraction: float, seed: int) -> np.ndarray:
    """``(rows,)`` bool training mask of a stratified split (scikit-learn ``train_test_split``)."""
    from sklearn.model_selection import train_test_split

    train, _ = train_test_split(
        np.arange(len(targets)), test_size=test_fraction, random_state=seed, stratify=targets
    )
    mask = np.zeros(len(targets), dtype=bool)
    mask[train] = True
    return mask


def _task_f1(
    codes: np.ndarray, targets: np.ndarray, train: np.ndarray, kind: str, n: int, seed: int
) -> np.ndarray:
    """``(tasks,)`` test F1 of a ``kind`` probe per task on the ``n`` top latents of its training rows.
    codes ``(rows, n_latents)``; targets, train ``(rows, tasks)`` bool."""
    if kind not in PROBE_KINDS:
        raise ValueError(f"unknown probe kind {kind!r}; choose one of {PROBE_KINDS}")
    columns = top_latents_per_task(codes, targets, train, n)  # (tasks, n)
    x = codes.T[columns].transpose(0, 2, 1)  # (tasks, rows, n)
    if kind == "logistic":
        coef, intercept = fit_logistic_batched(x, targets.T, balanced_sample_weights(targets, train).T)
        predicted = np.einsum("trn,tn->tr", x, coef) + intercept[:, None] > 0
    else:
        predicted = np.stack(
            [
                _xgboost(seed).fit(x[t][train[:, t]], targets[train[:, t], t]).predict(x[t]).astype(bool)
                for t in range(targets.shape[1])
            ]
        )
    return np.array(
        [binary_f1(targets[~train[:, t], t], predicted[t][~train[:, t]]) for t in range(targets.shape[1])]
    )


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
    train = _split(targets, test_fraction, seed)[:, None]
    n = codes.shape[1] if n_latents is None else n_latents
    return float(_task_f1(codes, targets[:, None], train, kind, n, seed)[0])


def run_probes(
    codes: torch.Tensor | np.ndarray,
    labels: Mapping[str, torch.Tensor],
    tasks: Sequence[ProbeTask],
    trunc_lengths: Sequence[int],
    kinds: Sequence[str] = PROBE_KINDS,
    seed: int = 0,
    test_fraction: float = 0.25,
) -> list[dict[str, object]]:
    """One row ``{task, kind, trunc_length, f1}`` per task x kind x truncation length (the layout of the
    authors' ``probe_results/results_<n>.csv``), in task order. Each task has its own stratified split
    (``test_fraction`` held out). Tasks with fewer than 4 positives or negatives are skipped (a stratified
    split needs both classes on both sides)."""
    codes = codes.detach().cpu().numpy() if isinstance(codes, torch.Tensor) else np.asarray(codes)
    codes = np.asarray(codes, dtype=np.float64)
    if not np.isfinite(codes).all():
        raise ValueError("codes contain NaN/Inf values")
    kept, columns = [], []
    for task in tasks:
        targets = task.targets(labels)
        if targets.sum() >= 4 and (~targets).sum() >= 4:
            kept.append(task)
            columns.append(targets)
    if not kept:
        return []
    targets = np.stack(columns, axis=1)  # (rows, tasks)
    train = np.stack([_split(targets[:, t], test_fraction, seed) for t in range(len(kept))], axis=1)
    scores = {
        (kind, n): _task_f1(codes, targets, train, kind, min(n, codes.shape[1]), seed)
        for kind, n in itertools.product(kinds, trunc_lengths)
    }
    return [
        {"task": task.name, "kind": kind, "trunc_length": n, "f1": float(scores[kind, n][t])}
        for t, task in enumerate(kept)
        for kind, n in itertools.product(kinds, trunc_lengths)
    ]
