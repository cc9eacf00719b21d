"""The stage shared by the Shapes (mini) and GalaxyMNIST (full) experiments: orbit activations -> M fit ->
SAEs -> probes.

Input: activations of every orbit member ``acts`` ``(n, G, d)`` (``acts[:, p]`` is the input rotated ``p``
times) and per-member labels ``{factor: (n, G) int}``. The first half of the orbits (or the first ``n_train``)
trains, the rest measures:

1. ``M`` (:func:`~saebench.sae.equivariant.fit_group_action`, config ``group_action``) is fitted on the
   training orbits, its R² per power measured on the rest (run ``name: group-action``: ``m_r2_min``,
   ``m_r2_mean``);
2. every SAE of ``config["saes"]`` trains on the training orbits, in shuffled passes (epochs):
   ``topk_mlp`` and ``archetypal`` on orbit members as rows (batches of ``4 * batch_size`` rows),
   ``equivariant`` on orbit batches of ``batch_size`` orbits with the fitted ``M``, so an epoch has the same
   number of steps for both (:func:`sae_train_config`); archetypal SAEs share one k-means run per cluster
   count;
3. on the rest: ``fvu`` over every member (equivariant SAEs reconstruct member ``p`` as ``M^p D(z)``),
   ``l0``, and probes (:func:`saebench.metrics.probing.run_probes`) on the codes of every member with that
   member's labels. Metrics ``f1_<kind>_n<len>`` are means over tasks; ``f1_<group>_<kind>_n<len>`` means over
   the tasks of each factor group of ``probes.groups`` (e.g. invariant and oriented factors).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from saebench.metrics import fvu_dataset
from saebench.metrics.probing import ProbeTask, run_probes
from saebench.repro.pipeline import Run
from saebench.sae import create_sae
from saebench.sae.archetypal import kmeans_candidates
from saebench.sae.equivariant import fit_group_action, group_action_r2, orbit_step, reconstruct_orbits
from saebench.train import TrainConfig, train_sae


def _epoch_batches(rows: torch.Tensor, batch_size: int, seed: int) -> Iterator[torch.Tensor]:
    """Endless shuffled passes over ``rows`` (first dimension) in batches of ``batch_size`` (the last batch
    of a pass may be smaller); the trainer stops after ``total_steps``."""
    generator = torch.Generator().manual_seed(seed)
    while True:
        for idx in torch.randperm(rows.shape[0], generator=generator).split(batch_size):
            yield rows[idx]


def sae_train_config(base: dict[str, Any], spec: dict[str, Any], n_batches_per_epoch: int, seed: int):
    """The :class:`~saebench.train.TrainConfig` of one SAE: the config's ``train`` block updated by the SAE's
    own ``train`` block. ``epochs`` (README ``--epochs``: passes over the training orbits) becomes
    ``total_steps = epochs * n_batches_per_epoch``; give ``epochs`` or ``total_steps``, not both."""
    merged = {**base, **spec.get("train", {})}
    if "epochs" in merged:
        if "total_steps" in merged:
            raise ValueError(
                f"SAE {spec['name']!r}: train gives both epochs ({merged['epochs']}) and total_steps "
                f"({merged['total_steps']}); keep one"
            )
        merged["total_steps"] = merged.pop("epochs") * n_batches_per_epoch
    return TrainConfig(**merged, seed=seed, progress=False)


def _build_sae(spec: dict[str, Any], d: int, members: torch.Tensor, matrix: torch.Tensor, centroids):
    options = {
        "d_in": d,
        "n_latents": spec["n_latents"],
        "k": spec["k"],
        "encoder_hidden": spec["encoder_hidden"],
    }
    if spec["architecture"] == "equivariant":
        sae = create_sae(
            "equivariant", **options, loss_type=spec["loss_type"], lambda_mse=spec.get("lambda_mse", 0)
        )
        sae.set_group_action(matrix)
    elif spec["architecture"] == "archetypal":
        sae = create_sae("archetypal", **options, n_candidates=spec["n_clusters"])
        # centre the inputs: the latents sit far from the origin, and atoms built from uncentred centroids
        # overshoot so much at the start that every code dies (NOTES.md)
        sae.set_input_normalization(members.mean(dim=0), 1.0)
        sae.set_candidates(centroids(spec["n_clusters"]))
    else:
        sae = create_sae(spec["architecture"], **options)
    return sae


def _group_means(rows: list[dict[str, Any]], groups: Mapping[str, Sequence[str]]) -> dict[str, float]:
    metrics: dict[str, float] = {}
    for group, factors in {"": None, **groups}.items():
        prefix = f"{group}_" if group else ""
        chosen = [r for r in rows if factors is None or r["task"].split("=")[0] in factors]
        for kind, n in sorted({(r["kind"], r["trunc_length"]) for r in chosen}):
            values = [r["f1"] for r in chosen if r["kind"] == kind and r["trunc_length"] == n]
            metrics[f"f1_{prefix}{kind}_n{n}"] = float(np.mean(values))
    return metrics


def run_orbit_saes(
    acts: torch.Tensor,
    labels: Mapping[str, torch.Tensor],
    tasks: Sequence[ProbeTask],
    config: dict[str, Any],
    seed: int,
    backbone: str,
    n_train: int | None = None,
) -> tuple[list[Run], list[dict[str, Any]]]:
    """Runs (``group-action`` first, then one per SAE) and probe rows ``{backbone, method, n_latents, k,
    task, kind, trunc_length, f1}`` for ``(n, G, d)`` activations ``acts`` (see the module docstring).
    ``n_train``: the orbits that train (the first ones; default half), the rest measure."""
    half = acts.shape[0] // 2 if n_train is None else n_train
    if not 0 < half < acts.shape[0]:
        raise ValueError(
            f"n_train must leave orbits on both sides of the split, got {half} of {acts.shape[0]}"
        )
    train_acts, test_acts = acts[:half], acts[half:]
    test_labels = {k: v[half:].reshape(-1) for k, v in labels.items()}
    matrix = fit_group_action(train_acts, **config["group_action"], seed=seed)
    r2 = group_action_r2(matrix, test_acts)
    runs = [
        Run({"name": "group-action", "backbone": backbone}, {"m_r2_min": r2.min(), "m_r2_mean": r2.mean()})
    ]
    d = acts.shape[-1]
    train_members, test_members = train_acts.reshape(-1, d), test_acts.reshape(-1, d)
    cache: dict[int, torch.Tensor] = {}

    def centroids(n_clusters: int) -> torch.Tensor:
        if n_clusters not in cache:
            cache[n_clusters] = kmeans_candidates(train_members, n_clusters, seed=seed)
        return cache[n_clusters]

    batches_per_epoch = math.ceil(half / config["batch_size"])
    probes = config["probes"]
    probe_rows: list[dict[str, Any]] = []
    for spec in config["saes"]:
        torch.manual_seed(seed)
        sae = _build_sae(spec, d, train_members, matrix, centroids)
        train_config = sae_train_config(config["train"], spec, batches_per_epoch, seed)
        if spec["architecture"] == "equivariant":
            batches = _epoch_batches(train_acts, config["batch_size"], seed)
            train_sae(sae, batches, train_config, step_fn=orbit_step)
        else:
            batches = _epoch_batches(train_members, config["batch_size"] * acts.shape[1], seed)
            train_sae(sae, batches, train_config)
        with torch.no_grad():
            codes = sae.encode(test_members)
            if spec["architecture"] == "equivariant":
                recon = reconstruct_orbits(sae, test_acts).reshape(-1, d)
            else:
                recon = sae.decode(codes)
        rows = run_probes(codes, test_labels, tasks, probes["trunc_lengths"], probes["kinds"], seed=seed)
        fields = {"name": spec["name"], "backbone": backbone, "sae": spec["architecture"], "k": spec["k"]}
        fields["n_latents"] = spec["n_latents"]
        metrics = {"fvu": fvu_dataset(test_members, recon), "l0": float((codes != 0).sum(-1).float().mean())}
        metrics.update(_group_means(rows, probes.get("groups", {})))
        runs.append(Run(fields=fields, metrics=metrics))
        method = {
            "backbone": backbone,
            "method": spec["name"],
            "n_latents": spec["n_latents"],
            "k": spec["k"],
        }
        probe_rows.extend({**method, **row} for row in rows)
    return runs, probe_rows
