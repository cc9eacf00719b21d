"""MSAE's mini tier: the embedding experiment (:mod:`.embedding_sweep`) on real pooled embeddings of
Fashion-MNIST images, read from the mini-tier stores (``saebench cache-mini``, docs/mini-tier.md).

Per backbone (config ``backbones``): the store's rows are split once, by a fixed permutation independent of
the training seed, into ``eval_rows`` held-out rows and the training rows; the ``saes`` sweep is trained on
the training rows; a linear probe for the 10 Fashion-MNIST classes is trained on the training originals
(selected on the held-out macro-F1, msae.md §2.7); with a ``vocabulary`` (the zoo CLIP-like pair, whose
image embeddings live in MiniLM's text space) its words are embedded by the pair's text tower and latents
are named (msae.md §5). Checks per backbone ``b`` and MSAE ``m`` (``msae-rw``, ``msae-uw``):

- ``{b}-{m}-dominates``: every baseline's (L0, FVU) point is weakly dominated by one of ``m``'s
  truncation points (:func:`.frontier.dominance_check`, §4.2); ``{b}-{m}-dominates-{family}`` the same
  against one baseline family (``relu``, ``topk``, ``batchtopk``);
- ``{b}-{m}-graceful``: ``m``'s FVU never rises with the number of kept latents (§4.7);
- ``{b}-{m}-truncates-better``: truncated below the largest TopK's ``k``, ``m`` beats that TopK truncated
  the same way (§4.3).

The figure (config ``figure``, relative to the repository root; seed 0 only, other seeds write it into the
workdir) plots every backbone's frontiers: one series per backbone and SAE family.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from saebench.metrics.msae import authors_sweep_ks
from saebench.metrics.probe_agreement import ProbeTraining
from saebench.repro.pipeline import CheckResult, PipelineResult, Run
from saebench.repro.tiers import MissingRequirement, requirement_paths
from saebench.zoo.mini_caches import open_mini_tier

from .checks import graceful_check, truncation_check
from .embedding_sweep import Vocabulary, fit_probe, run_backbone, standardisation, train_standardised
from .frontier import baseline_point, dominance_check, msae_points, plot_frontiers

__all__ = [
    "MSAE_NAMES",
    "run_mini",
    "run_embeddings",
    "backbone_name",
    "split_rows",
    "backbone_checks",
    "frontier_series",
]

#: The sweep names of the two Matryoshka SAEs; every other SAE of a backbone is a baseline.
MSAE_NAMES = ("msae-rw", "msae-uw")
REPOSITORY_ROOT = Path(__file__).resolve().parents[2]


def split_rows(n_rows: int, eval_rows: int, split_seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(train, eval)`` sorted row indices: ``eval_rows`` rows drawn by ``default_rng(split_seed)``."""
    if not 0 < eval_rows < n_rows:
        raise ValueError(f"eval_rows must lie in [1, {n_rows - 1}], got {eval_rows}")
    order = np.random.default_rng(split_seed).permutation(n_rows)
    return np.sort(order[eval_rows:]), np.sort(order[:eval_rows])


def _open_tier(config: dict[str, Any]):
    manifest = requirement_paths(config)["mini_tier_manifest"]
    tier = open_mini_tier(manifest.parent, plan=config.get("plan", "mini"))
    missing = [b["store"] for b in config["backbones"] if b["store"] not in tier.keys()]
    if missing:
        raise MissingRequirement(
            f"the mini-tier manifest {manifest} has no store {', '.join(missing)}: "
            "re-run `saebench cache-mini`"
        )
    return tier


#: The ``vocabulary.threshold`` that :func:`class_word_cosine` computes from the data.
CLASS_WORD_THRESHOLD = "class-word-cosine"


def class_word_cosine(rows: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean cosine of each image embedding with the text embedding of its class's name (the first word of
    :data:`saebench.zoo.text.CLASS_WORDS`): how close a typical image of the zoo CLIP-like pair lands to its
    own label. A latent counts as named when its direction is at least that close to a vocabulary word."""
    from saebench.zoo.text import CLASS_WORDS, text_encoder

    words = text_encoder().encode([words[0] for words in CLASS_WORDS]).cpu()
    cosines = torch.nn.functional.normalize(rows, dim=1) @ words.T
    return float(cosines[torch.arange(rows.shape[0]), labels].mean())


def _vocabulary(spec: dict[str, Any], rows: torch.Tensor, labels: torch.Tensor) -> Vocabulary:
    """The zoo CLIP-like pair's text tower (frozen MiniLM, :mod:`saebench.zoo.text`) embeds the words; the
    threshold is a number or :data:`CLASS_WORD_THRESHOLD` (from ``rows``, :func:`class_word_cosine`)."""
    from saebench.zoo.text import text_encoder

    threshold = spec["threshold"]
    if threshold == CLASS_WORD_THRESHOLD:
        threshold = class_word_cosine(rows, labels)
    elif isinstance(threshold, str):
        raise ValueError(
            f"vocabulary threshold must be a number or {CLASS_WORD_THRESHOLD!r}, got {threshold!r}"
        )
    words = list(spec["words"])
    return Vocabulary(tuple(words), text_encoder().encode(words).cpu(), float(threshold))


def backbone_checks(backbone: str, runs: list[Run]) -> dict[str, CheckResult]:
    """The checks of the module docstring for one backbone's runs."""
    by_name = {run.fields["name"]: run for run in runs}
    baselines = [run for run in runs if run.fields["name"] not in MSAE_NAMES]
    topks = [run for run in baselines if run.fields["sae"] == "topk"]
    checks = {}
    for name in MSAE_NAMES:
        if name not in by_name:
            continue
        msae = by_name[name]
        ks = authors_sweep_ks(int(msae.fields["n_latents"]))
        checks[f"{backbone}-{name}-dominates"] = dominance_check(msae, baselines)
        for family in sorted({run.fields["sae"] for run in baselines}):
            members = [run for run in baselines if run.fields["sae"] == family]
            checks[f"{backbone}-{name}-dominates-{family}"] = dominance_check(msae, members)
        checks[f"{backbone}-{name}-graceful"] = graceful_check(msae, ks)
        if topks:
            largest = max(topks, key=lambda run: run.fields["k"])
            checks[f"{backbone}-{name}-truncates-better"] = truncation_check(msae, largest, ks)
    return checks


def frontier_series(backbone: str, runs: list[Run]) -> dict[str, list[tuple[float, float]]]:
    """Figure series: ``"<backbone> <family>"`` -> points; MSAEs give their truncation points, each baseline
    family (ReLU, TopK, BatchTopK) the points of its sweep."""
    series: dict[str, list[tuple[float, float]]] = {}
    for run in runs:
        name = run.fields["name"]
        if name in MSAE_NAMES:
            series[f"{backbone} {name}"] = msae_points(run)
        else:
            series.setdefault(f"{backbone} {run.fields['sae']}", []).append(baseline_point(run))
    return series


def run_embeddings(
    spec: dict[str, Any],
    rows: torch.Tensor,
    labels: torch.Tensor,
    config: dict[str, Any],
    seed: int,
    device: str,
) -> list[Run]:
    """Split, train, probe, name and score one backbone's embeddings ``rows (n, d)`` with class ``labels``."""
    train_idx, eval_idx = split_rows(rows.shape[0], config["eval_rows"], config["split_seed"])
    train_x, eval_x = rows[train_idx], rows[eval_idx]
    normalisation = standardisation(train_x, config["normalization"])
    trained = train_standardised(
        spec.get("saes", config["saes"]),
        train_x,
        {**config["train"], **spec.get("train", {})},
        spec.get("batch_size", config["batch_size"]),
        normalisation,
        seed,
        device,
        backbone_name(spec),
    )
    probe_options = ProbeTraining(**config["probe"])
    probe = fit_probe(train_x, labels[train_idx], eval_x, labels[eval_idx], normalisation, probe_options)
    vocabulary = None
    if "vocabulary" in spec:
        vocabulary = _vocabulary(spec["vocabulary"], train_x, labels[train_idx])
    return run_backbone(trained, eval_x.to(device), config["evaluation"], probe, vocabulary)


def backbone_name(spec: dict[str, Any]) -> str:
    """The backbone of a ``backbones`` entry: the first part of its store key."""
    return spec["store"].split("/")[0]


def run_mini(config: dict[str, Any], seed: int, workdir: Path) -> PipelineResult:
    """Every backbone of the config: runs, checks, and the frontier figure."""
    device = config.get("device", "cpu")
    tier = _open_tier(config)
    runs, checks, series = [], {}, {}
    for spec in config["backbones"]:
        store = tier.store(spec["store"])
        labels = torch.from_numpy(store.index()[:, 2].copy())
        backbone_runs = run_embeddings(spec, store.rows(0, store.n_rows), labels, config, seed, device)
        backbone = backbone_name(spec)
        runs += backbone_runs
        checks.update(backbone_checks(backbone, backbone_runs))
        series.update(frontier_series(backbone, backbone_runs))
    figure = REPOSITORY_ROOT / config["figure"] if seed == 0 else Path(workdir) / Path(config["figure"]).name
    plot_frontiers(series, figure, title=f"MSAE mini tier: FVU vs L0 (seed {seed})")
    return PipelineResult(runs=runs, checks=checks, device=str(device))
