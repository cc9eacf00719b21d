"""Probing metrics: F1 by hand, latent truncation by hand, probe tasks over factors, probes that work."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from saebench.metrics.probing import (
    ProbeTask,
    binary_f1,
    factor_probe_tasks,
    probe_f1,
    run_probes,
    top_latents_by_mean_difference,
)


def test_binary_f1_by_hand():
    # TP = 2 (rows 0, 4), FP = 1 (row 3), FN = 1 (row 1): F1 = 2*2 / (2*2 + 1 + 1) = 2/3
    assert binary_f1(np.array([1, 1, 0, 0, 1]), np.array([1, 0, 0, 1, 1])) == pytest.approx(2 / 3)
    assert binary_f1(np.array([0, 0]), np.array([0, 0])) == 0.0
    with pytest.raises(ValueError, match="same shape"):
        binary_f1(np.zeros(2), np.zeros(3))


def test_top_latents_by_hand():
    # positives rows 0-1, negatives rows 2-3. Mean gaps: latent 0: |1 - 1| = 0; latent 1: |3 - 0| = 3;
    # latent 2: |0 - 2| = 2. Top 2 -> (1, 2).
    codes = np.array([[1, 2, 0], [1, 4, 0], [1, 0, 2], [1, 0, 2]], dtype=float)
    targets = np.array([True, True, False, False])
    assert top_latents_by_mean_difference(codes, targets, 2).tolist() == [1, 2]
    with pytest.raises(ValueError, match="both positives and negatives"):
        top_latents_by_mean_difference(codes, np.ones(4, dtype=bool), 1)
    with pytest.raises(ValueError, match="n must be"):
        top_latents_by_mean_difference(codes, targets, 4)


def test_tasks_from_factors():
    tasks = factor_probe_tasks({"shape": 3, "colour": 2}, single=["shape"], pairs=[("shape", "colour")])
    assert len(tasks) == 3 + 3 * 2
    assert tasks[0].name == "shape=0" and tasks[-1].name == "shape=2&colour=1"
    labels = {"shape": torch.tensor([2, 2, 0]), "colour": torch.tensor([1, 0, 1])}
    assert tasks[-1].targets(labels).tolist() == [True, False, False]
    with pytest.raises(KeyError, match="size"):
        ProbeTask((("size", 0),)).targets(labels)


@pytest.mark.parametrize("kind", ["logistic", "xgboost"])
def test_probe_finds_the_informative_latent(kind):
    rng = np.random.default_rng(0)
    targets = rng.random(400) < 0.3
    codes = rng.random((400, 10))
    codes[:, 7] = targets * 2.0  # latent 7 fires exactly on the positives (a monosemantic feature)
    assert probe_f1(codes, targets, kind=kind, n_latents=1) == 1.0
    noise_only = np.delete(codes, 7, axis=1)
    # without latent 7 the codes are independent of the label: F1 near the base rate's, far below 1
    assert probe_f1(noise_only, targets, kind=kind, n_latents=3) < 0.7
    with pytest.raises(ValueError, match="unknown probe kind"):
        probe_f1(codes, targets, kind="svm")


def test_run_probes_rows():
    rng = np.random.default_rng(1)
    labels = {"shape": torch.as_tensor(rng.integers(0, 2, 200))}
    codes = np.stack([labels["shape"].numpy() * 1.0, rng.random(200)], axis=1)
    tasks = factor_probe_tasks({"shape": 2}, single=["shape"]) + [ProbeTask((("shape", 5),))]
    rows = run_probes(codes, labels, tasks, trunc_lengths=[1, 2], kinds=["logistic"])
    assert [(r["task"], r["trunc_length"]) for r in rows] == [
        ("shape=0", 1),
        ("shape=0", 2),
        ("shape=1", 1),
        ("shape=1", 2),
    ]  # shape=5 has no positives: skipped
    assert all(r["f1"] == 1.0 for r in rows)


def test_batched_logistic_matches_scikit_learn():
    from sklearn.linear_model import LogisticRegression

    from saebench.metrics.probing import balanced_sample_weights, fit_logistic_batched

    rng = np.random.default_rng(2)
    x = rng.normal(size=(3, 300, 4)) * np.array([1.0, 3.0, 0.5, 2.0])
    targets = (x[..., 0] + 0.5 * x[..., 1] + rng.normal(size=(3, 300)) > 1.0).T  # (rows, tasks), imbalanced
    train = rng.random((300, 3)) < 0.75
    coef, intercept = fit_logistic_batched(x, targets.T, balanced_sample_weights(targets, train).T)
    for t in range(3):
        rows = train[:, t]
        ref = LogisticRegression(class_weight="balanced", tol=1e-10, max_iter=10_000)
        ref.fit(x[t][rows], targets[rows, t])
        # both minimise the same strictly convex objective; 1e-4 covers lbfgs's stopping tolerance
        np.testing.assert_allclose(coef[t], ref.coef_[0], rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(intercept[t], ref.intercept_[0], rtol=1e-4, atol=1e-4)


def test_balanced_weights_by_hand():
    from saebench.metrics.probing import balanced_sample_weights

    # task 0 trains on rows 0-3 with 1 positive, 3 negatives: positive weight 4 / (2 * 1) = 2, negative
    # 4 / (2 * 3) = 2/3; row 4 is held out (weight 0)
    targets = np.array([[True], [False], [False], [False], [True]])
    train = np.array([[True], [True], [True], [True], [False]])
    np.testing.assert_allclose(balanced_sample_weights(targets, train)[:, 0], [2, 2 / 3, 2 / 3, 2 / 3, 0])


@pytest.mark.parametrize("kind", ["logistic", "xgboost"])
def test_run_probes_equals_one_probe_per_task(kind):
    rng = np.random.default_rng(3)
    labels = {"colour": torch.as_tensor(rng.integers(0, 3, 240))}
    codes = rng.random((240, 6))
    codes[:, 2] += labels["colour"].numpy() == 1
    codes[:, 4] += 0.5 * (labels["colour"].numpy() == 2)
    tasks = factor_probe_tasks({"colour": 3}, single=["colour"])
    rows = run_probes(codes, labels, tasks, trunc_lengths=[2], kinds=[kind], seed=5)
    for task, row in zip(tasks, rows, strict=True):
        alone = probe_f1(codes, task.targets(labels), kind=kind, n_latents=2, seed=5)
        assert row["f1"] == pytest.approx(alone, abs=1e-12)
