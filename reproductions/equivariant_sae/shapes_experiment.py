"""The Shapes experiment (mini tier): Shapes world -> base autoencoder -> M fit -> SAEs -> probes.

For each autoencoder architecture in ``autoencoders`` (README ``--ae-architecture``):

1. train it on the world's images with rotation augmentation (:mod:`.autoencoders`) and take the latents of
   every orbit member, ``(n, 4, latent)``, scaled to unit standard deviation overall;
2. fit ``M`` on the first half of the orbits and report its R² on the second (run ``name: group-action``);
3. train the SAEs of ``saes`` on the first half: ``topk_mlp`` and ``archetypal`` on orbit members as rows,
   ``equivariant`` on orbit batches (with the fitted ``M``);
4. on the second half: ``fvu`` over every member (equivariant SAEs: ``M^p D(z)``), ``l0``, and probes
   (:func:`saebench.metrics.probing.run_probes`) on the codes of every member with that member's labels;
   metrics ``f1_<kind>_n<len>`` (mean over tasks), ``f1_invariant_...`` (shape, colour, size tasks) and
   ``f1_oriented_...`` (orientation, quadrant tasks); ``probes.factors`` limits the factors probed (all five
   by default). The rows are also written to
   ``<workdir>/probe_results/results_<arch>_<name>.csv`` (the authors' ``results_<n>.csv`` layout).
"""

from __future__ import annotations

import csv
import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from saebench.data.shapes import ShapesConfig, ShapesWorld
from saebench.metrics import fvu_dataset
from saebench.metrics.probing import factor_probe_tasks, run_probes
from saebench.repro.pipeline import Run
from saebench.sae import create_sae
from saebench.sae.archetypal import kmeans_candidates
from saebench.sae.equivariant import fit_group_action, group_action_r2, orbit_step, reconstruct_orbits
from saebench.train import TrainConfig, train_sae

from .autoencoders import build_autoencoder, encode_orbits, train_autoencoder

INVARIANT_FACTORS = ("shape", "colour", "size")
ORIENTED_FACTORS = ("orientation", "quadrant")


def _random_batches(rows: torch.Tensor, batch_size: int, steps: int, seed: int) -> Iterator[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        yield rows[torch.randint(0, rows.shape[0], (batch_size,), generator=generator)]


def _build_sae(spec: dict[str, Any], d: int, members: torch.Tensor, matrix: torch.Tensor, seed: int):
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
        sae.set_candidates(kmeans_candidates(members, spec["n_clusters"], seed=seed))
    else:
        sae = create_sae(spec["architecture"], **options)
    return sae


def _probe_metrics(rows: list[dict[str, Any]]) -> dict[str, float]:
    metrics: dict[str, float] = {}
    groups = {"": None, "invariant_": INVARIANT_FACTORS, "oriented_": ORIENTED_FACTORS}
    for prefix, factors in groups.items():
        chosen = [r for r in rows if factors is None or r["task"].split("=")[0] in factors]
        for kind, n in sorted({(r["kind"], r["trunc_length"]) for r in chosen}):
            values = [r["f1"] for r in chosen if r["kind"] == kind and r["trunc_length"] == n]
            metrics[f"f1_{prefix}{kind}_n{n}"] = float(np.mean(values))
    return metrics


def _write_probe_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["task", "kind", "trunc_length", "f1"])
        writer.writeheader()
        writer.writerows(rows)


def run_shapes(config: dict[str, Any], seed: int, workdir: Path) -> list[Run]:
    world = ShapesWorld(ShapesConfig(**config["shapes"], seed=seed))
    images, labels = world.orbits()
    half = len(world) // 2
    test_labels = {k: v[half:].reshape(-1) for k, v in labels.items()}
    probes = config["probes"]
    tasks = factor_probe_tasks(
        world.n_values, single=probes.get("factors", INVARIANT_FACTORS + ORIENTED_FACTORS)
    )
    base = TrainConfig(**config["train"], seed=seed, progress=False)
    runs = []
    for arch in config["autoencoders"]:
        torch.manual_seed(seed)
        model = build_autoencoder(arch, world.config.image_size, config["ae"]["latent_dim"])
        ae_mse = train_autoencoder(
            model, world.images, config["ae"]["epochs"], lr=config["ae"]["lr"], seed=seed
        )
        acts = encode_orbits(model, images)
        acts = acts / acts.reshape(-1, acts.shape[-1]).std()
        train_acts, test_acts = acts[:half], acts[half:]
        matrix = fit_group_action(train_acts, **config["group_action"], seed=seed)
        r2 = group_action_r2(matrix, test_acts)
        fields = {"name": "group-action", "backbone": arch}
        metrics = {"m_r2_min": float(r2.min()), "m_r2_mean": float(r2.mean()), "ae_mse": ae_mse}
        runs.append(Run(fields=fields, metrics=metrics))
        d = acts.shape[-1]
        train_members = train_acts.reshape(-1, d)
        test_members = test_acts.reshape(-1, d)
        for spec in config["saes"]:
            torch.manual_seed(seed)
            sae = _build_sae(spec, d, train_members, matrix, seed)
            train_config = dataclasses.replace(base, **spec.get("train", {}))
            steps = train_config.total_steps
            if spec["architecture"] == "equivariant":
                batches = _random_batches(train_acts, config["batch_size"], steps, seed)
                train_sae(sae, batches, train_config, step_fn=orbit_step)
            else:
                batches = _random_batches(train_members, config["batch_size"] * 4, steps, seed)
                train_sae(sae, batches, train_config)
            with torch.no_grad():
                codes = sae.encode(test_members)
                if spec["architecture"] == "equivariant":
                    recon = reconstruct_orbits(sae, test_acts).reshape(-1, d)
                else:
                    recon = sae.decode(codes)
            rows = run_probes(codes, test_labels, tasks, probes["trunc_lengths"], probes["kinds"], seed=seed)
            _write_probe_rows(workdir / "probe_results" / f"results_{arch}_{spec['name']}.csv", rows)
            metrics = {
                "fvu": fvu_dataset(test_members, recon),
                "l0": float((codes != 0).sum(-1).float().mean()),
            }
            metrics.update(_probe_metrics(rows))
            fields = {"name": spec["name"], "backbone": arch, "sae": spec["architecture"], "k": spec["k"]}
            fields["n_latents"] = spec["n_latents"]
            runs.append(Run(fields=fields, metrics=metrics))
    return runs
