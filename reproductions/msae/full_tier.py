"""MSAE's full tier: the README's runs on the authors' precomputed CLIP embeddings (msae.md §1.2, §4).

Inputs (paths from the config's ``requires``, :func:`saebench.repro.tiers.requirement_paths`):

- embeddings as the authors' ``precompute_activations.py`` writes them (msae.md §4.2): **raw float32
  memmaps without an NPY header**, named ``{dataset}_{model}_{split}_{image|text}_{N}_{dim}.npy``, the shape
  read from the last two fields of the name (:func:`open_authors_embeddings`); ImageNet class names, one per
  row, in the ``.txt`` file of the same stem (:func:`read_row_texts`);
- the CLIP weights (open_clip ``*-quickgelu`` architectures, :mod:`saebench.acts.backbones.open_clip_models`),
  whose text tower embeds the vocabulary for concept naming (msae.md §5);
- a vocabulary word list, one entry per line (the authors' ``vocab/*.txt``).

Per backbone (config ``backbones``): standardisation statistics over the whole training memmap (msae.md
§2.1); the SAEs of that backbone (config ``saes``, each with its ``lr`` and ``epochs``; the README's runs)
trained together on shuffled epochs at batch 4096 (:mod:`.embedding_sweep`); every metric on the image
evaluation set (ImageNet-1k train), the linear probe trained on it and read on ImageNet validation, named
concepts with the vocabulary, and the same reconstruction metrics on the text evaluation set (CC3M
validation captions) under the ``text_`` prefix, standardised with the **text set's own** statistics as the
refactored code does across modalities (msae.md §2.1, the post-paper text fix).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from saebench.acts.backbones.core import TextTower
from saebench.metrics.probe_agreement import ProbeTraining
from saebench.repro.pipeline import PipelineResult, Run
from saebench.repro.tiers import requirement_paths

from .embedding_sweep import (
    Vocabulary,
    evaluate_embedding_sae,
    fit_probe,
    run_backbone,
    standardisation,
    train_standardised,
)

__all__ = [
    "NPY_MAGIC",
    "open_authors_embeddings",
    "read_row_texts",
    "labels_as_ints",
    "read_vocabulary",
    "embed_vocabulary",
    "run_full",
    "full_experiment",
]

NPY_MAGIC = b"\x93NUMPY"
_FLOAT32_BYTES = 4


def open_authors_embeddings(path: str | Path) -> np.memmap:
    """A read-only ``(N, dim)`` float32 memmap of an authors' embedding file ``..._{N}_{dim}.npy``.

    Their files are raw memmaps despite the extension (msae.md §4.2, §8.11); a file with an NPY header or a
    size other than ``N * dim * 4`` bytes is refused, saying which it is."""
    path = Path(path)
    fields = path.stem.split("_")
    try:
        n, dim = int(fields[-2]), int(fields[-1])
    except (IndexError, ValueError):
        raise ValueError(
            f"{path.name}: not an MSAE embedding file name; the authors' names end in _<rows>_<dim>.npy "
            "(e.g. cc3m_ViT-L~14_train_image_2905936_768.npy)"
        ) from None
    with path.open("rb") as handle:
        if handle.read(len(NPY_MAGIC)) == NPY_MAGIC:
            raise ValueError(
                f"{path} has an NPY header; the authors' files are raw float32 memmaps. Convert it with "
                "np.load(path).astype('float32').tofile(path_without_header)"
            )
    expected = n * dim * _FLOAT32_BYTES
    size = path.stat().st_size
    if size != expected:
        raise ValueError(
            f"{path} holds {size} bytes but its name says {n} rows x {dim} float32 = {expected} bytes; "
            "the file is truncated or the name is wrong"
        )
    return np.memmap(path, dtype=np.float32, mode="r", shape=(n, dim))


def read_row_texts(embeddings: str | Path, n_rows: int) -> list[str]:
    """The captions or labels beside an embedding file (same stem, ``.txt``), one per row."""
    path = Path(embeddings).with_suffix(".txt")
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: precompute_activations.py writes the labels beside the embeddings, "
            "one per row"
        )
    lines = path.read_text(encoding="utf-8").splitlines()
    if len(lines) != n_rows:
        raise ValueError(f"{path} has {len(lines)} lines for {n_rows} embedding rows")
    return lines


def labels_as_ints(names: Sequence[str], classes: Sequence[str]) -> torch.Tensor:
    """``(n,)`` int64 index of each class name in ``classes``; an unknown name is an error."""
    index = {name: i for i, name in enumerate(classes)}
    unknown = sorted(set(names) - set(index))
    if unknown:
        raise ValueError(f"labels {unknown[:5]} are not among the training classes")
    return torch.tensor([index[name] for name in names], dtype=torch.int64)


def read_vocabulary(path: str | Path) -> list[str]:
    """Non-empty, stripped lines of a vocabulary file (the authors' files hold one empty line, msae.md §6)."""
    words = [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines()]
    words = [word for word in words if word]
    if not words:
        raise ValueError(f"{path} holds no vocabulary entry (one word or phrase per line)")
    return words


@torch.no_grad()
def embed_vocabulary(tower: TextTower, words: Sequence[str], batch_size: int = 1024) -> torch.Tensor:
    """``(n_words, width)`` raw (not normalised) CLIP text embeddings of ``words`` (msae.md §5)."""
    chunks = [list(words[i : i + batch_size]) for i in range(0, len(words), batch_size)]
    return torch.cat([tower.encode(tower.tokenize(chunk)).float().cpu() for chunk in chunks])


def _text_metrics(
    sae, text_rows: np.ndarray, normalization: str, evaluation: dict[str, Any]
) -> dict[str, float]:
    """Reconstruction metrics on the text set, standardised with its own statistics (msae.md §2.1)."""
    reader = copy.deepcopy(sae)
    reader.set_input_normalization(
        *(t.to(sae.b_enc.device) for t in standardisation(text_rows, normalization))
    )
    metrics = evaluate_embedding_sae(
        reader,
        text_rows,
        chunk_rows=evaluation["chunk_rows"],
        cknna_batch=min(evaluation["cknna_batch"], text_rows.shape[0]),
        cknna_max_batches=evaluation.get("cknna_max_batches"),
    )
    return {f"text_{key}": value for key, value in metrics.items()}


def _backbone_runs(
    backbone: str,
    specs: list[dict[str, Any]],
    files: Mapping[str, Path],
    tower: TextTower,
    words: list[str],
    config: dict[str, Any],
    seed: int,
) -> list[Run]:
    device = config.get("device", "cpu")
    train_rows = open_authors_embeddings(files["train"])
    eval_rows = open_authors_embeddings(files["eval"])
    steps_per_epoch = train_rows.shape[0] // config["batch_size"]
    train_specs = [
        {
            **{key: value for key, value in spec.items() if key not in ("lr", "epochs", "backbone")},
            "train": {
                "lr": spec["lr"],
                "total_steps": spec.get("epochs", config["epochs"]) * steps_per_epoch,
            },
        }
        for spec in specs
    ]
    normalisation = standardisation(train_rows, config["normalization"])
    longest = max(spec["train"]["total_steps"] for spec in train_specs)
    trained = train_standardised(
        train_specs,
        train_rows,
        {**config["train"], "total_steps": longest},
        config["batch_size"],
        normalisation,
        seed,
        device,
        backbone,
    )
    probe = None
    if "probe_eval" in files:
        probe_rows = open_authors_embeddings(files["probe_eval"])
        train_names = read_row_texts(files["eval"], eval_rows.shape[0])
        classes = sorted(set(train_names))
        probe = fit_probe(
            eval_rows,
            labels_as_ints(train_names, classes),
            probe_rows,
            labels_as_ints(read_row_texts(files["probe_eval"], probe_rows.shape[0]), classes),
            normalisation,
            ProbeTraining(**config["probe"]),
        )
    vocabulary = Vocabulary(tuple(words), embed_vocabulary(tower, words), config["vocabulary"]["threshold"])
    runs = run_backbone(trained, eval_rows, config["evaluation"], probe, vocabulary)
    if "text_eval" not in files:
        return runs
    text_rows = open_authors_embeddings(files["text_eval"])
    return [
        Run(
            run.fields,
            {**run.metrics, **_text_metrics(sae, text_rows, config["normalization"], config["evaluation"])},
        )
        for run, (sae, _) in zip(runs, trained.values(), strict=True)
    ]


def full_experiment(
    config: dict[str, Any],
    paths: Mapping[str, Path],
    text_towers: Mapping[str, TextTower],
    seed: int,
) -> PipelineResult:
    """The full tier from resolved ``paths`` (requirement name -> path) and each backbone's text tower.

    ``config["backbones"]`` maps a backbone name to its data roles (``train``, ``eval``, optional
    ``probe_eval`` and ``text_eval``), each the name of a requirement; ``config["saes"]`` lists the runs,
    each with its ``backbone``."""
    words = read_vocabulary(paths[config["vocabulary"]["file"]])
    runs = []
    for backbone, roles in config["backbones"].items():
        specs = [spec for spec in config["saes"] if spec["backbone"] == backbone]
        if not specs:
            continue
        files = {role: paths[name] for role, name in roles.items() if role != "text_tower"}
        runs += _backbone_runs(backbone, specs, files, text_towers[backbone], words, config, seed)
    return PipelineResult(runs=runs, device=str(config.get("device", "cpu")))


def run_full(config: dict[str, Any], seed: int, workdir: Path) -> PipelineResult:
    """Resolve the supplied files, load each backbone's CLIP text tower from its weights, run."""
    from saebench.acts.backbones.registry import load_backbone

    paths = requirement_paths(config)
    device = config.get("device", "cpu")
    towers = {}
    for backbone, roles in config["backbones"].items():
        if any(spec["backbone"] == backbone for spec in config["saes"]):
            tower = roles["text_tower"]
            towers[backbone] = load_backbone(
                tower["backbone"], weights=paths[tower["weights"]], device=device
            ).text
    return full_experiment(config, paths, towers, seed)
