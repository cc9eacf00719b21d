"""MSAE's embedding experiment, shared by the mini and full tiers: SAEs trained on pooled image embeddings
with the authors' standardisation, then scored with the authors' evaluation (msae.md §2, §3.4, §4.7, §5).

Data flow, per backbone::

    train rows (n, d) ─► standardisation statistics (msae.md §2.1) ─► shuffled epochs of standardised rows
        ─► every ``saes`` spec trained together (:func:`~saebench.repro.sae_sweep.train_sae_specs`)
        ─► the statistics become each SAE's saved input normalisation, so it reads and writes raw embeddings
    eval rows (n_eval, d), in chunks ─► :func:`evaluate_embedding_sae` ─► one run per SAE

The SAEs train in the standardised space with identity input normalisation; setting the saved
normalisation afterwards (``SAE.set_input_normalization(mean, scale)``) makes the SAE map raw embeddings
exactly as it mapped standardised ones, and every metric is then computed in the original embedding space,
as the authors' evaluation scripts do after un-standardising (msae.md §2.2).

Metrics of one SAE (names are ours; the definitions are msae.md's):

- :func:`~saebench.evaluate.evaluate_sae` on its own output (the "sparse" output: TopK-k, BatchTopK with its
  inference threshold, ReLU, MSAE's first level): ``fvu_dataset``, ``cosine_similarity_mean``, ``l0``,
  ``sparsity_fraction``, ``dead_fraction``, ...; ``msae_fvu`` (per-sample FVU of that output, §2.2);
- the "all"/"full" output, ReLU of every pre-activation (§3.4): ``msae_fvu_full``, ``msae_cs_full``,
  ``msae_sparsity_full`` (fraction of zero latents, §2.4), ``msae_l0_full`` (count), ``dead_count_full``
  (never non-zero over the evaluation rows, §2.5);
- the progressive top-k sweep of ``score_topk_sae_embeddings.py`` (§4.7) at the authors' ``16, 32, ..., m``:
  ``msae_fvu_at_k{k}``, ``msae_cs_at_k{k}``, ``msae_l0_at_k{k}`` (mean count of non-zero codes kept);
- ``decoder_orthogonality`` (§2.8); ``cknna_input_codes`` / ``cknna_recon_input`` (§2.6: inputs vs full
  codes, as the evaluation scripts; full reconstruction vs input, as ``train.py``), mean over shuffled
  batches;
- ``probe_kl_full`` / ``probe_agreement_full`` (§2.7) when a probe is given: a linear probe trained on the
  original embeddings, read on originals vs full-output reconstructions of its evaluation rows;
- ``named_concepts`` (§5) when a vocabulary is given: latents whose decoder direction in the input space has a
  vocabulary entry at cosine >= the threshold, each entry counted once.

Chunked metrics are weighted means over rows, so the full tier streams its 1.28M evaluation rows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from saebench.acts.normalization import array_statistics, normalization
from saebench.evaluate import evaluate_sae
from saebench.metrics.cknna import MSAE_CKNNA_SHUFFLE_SEED, cknna
from saebench.metrics.msae import authors_sweep_ks, decoder_orthogonality, full_codes, progressive_topk_sweep
from saebench.metrics.naming import concept_directions, concept_similarity, count_named_concepts
from saebench.metrics.probe_agreement import (
    ProbeTraining,
    probe_agreement,
    probe_inputs,
    probe_kl,
    train_linear_probe,
)
from saebench.metrics.reconstruction import (
    cosine_similarity_per_sample,
    fvu_per_sample,
)
from saebench.repro.pipeline import Run
from saebench.repro.sae_sweep import train_sae_specs
from saebench.sae import SAE
from saebench.sae.matryoshka import MatryoshkaSAE

__all__ = [
    "Rows",
    "EmbeddingProbe",
    "Vocabulary",
    "standardisation",
    "shuffled_batches",
    "row_chunks",
    "train_standardised",
    "fit_probe",
    "evaluate_embedding_sae",
    "run_backbone",
]

#: A matrix of embeddings, one per row: a tensor or a (memory-mapped) numpy array.
Rows = torch.Tensor | np.ndarray


def _as_tensor(rows: Rows) -> torch.Tensor:
    """float32 tensor of ``rows`` (a copy for numpy input, so memmaps are read once)."""
    if isinstance(rows, torch.Tensor):
        return rows.float()
    return torch.from_numpy(np.array(rows, dtype=np.float32))


def row_chunks(rows: Rows, chunk_rows: int) -> Iterator[torch.Tensor]:
    """Consecutive float32 chunks ``(<= chunk_rows, d)`` of ``rows`` in order."""
    for start in range(0, rows.shape[0], chunk_rows):
        yield _as_tensor(rows[start : start + chunk_rows])


def standardisation(rows: Rows, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mean (d,), scale (d,))`` with ``x_n = (x - mean) / scale`` for scheme ``kind`` of
    :func:`saebench.acts.normalization.normalization` (MSAE: ``target_norm_code``, ``target_norm_paper``)."""
    return normalization(array_statistics(rows), kind)


def shuffled_batches(
    rows: Rows,
    batch_size: int,
    n_steps: int,
    seed: int,
    transform: Callable[[torch.Tensor], torch.Tensor] = lambda x: x,
) -> Iterator[torch.Tensor]:
    """``n_steps`` batches of ``batch_size`` rows, epoch after epoch, each epoch a fresh permutation drawn
    from ``numpy.random.default_rng(seed)`` (the authors shuffle their memmap each epoch, msae.md §4.1).
    A final partial batch of an epoch is dropped. Indices are sorted inside a batch so a memmap is read in
    order (the order of rows inside a batch does not change a step). ``transform`` maps each float32 batch."""
    n = rows.shape[0]
    if not 0 < batch_size <= n:
        raise ValueError(f"batch_size must lie in [1, {n}] (the number of rows), got {batch_size}")
    rng = np.random.default_rng(seed)
    per_epoch = n // batch_size
    step = 0
    while step < n_steps:
        order = rng.permutation(n)
        for b in range(min(per_epoch, n_steps - step)):
            yield transform(_as_tensor(rows[np.sort(order[b * batch_size : (b + 1) * batch_size])]))
        step += min(per_epoch, n_steps - step)


def _with_n_latents(spec: dict[str, Any], d: int) -> dict[str, Any]:
    """A ``saes`` spec with ``n_latents = expansion * d`` (msae.md §4.1: ``m = int(ef * n)``)."""
    spec = dict(spec)
    if "expansion" in spec:
        spec["n_latents"] = int(spec.pop("expansion") * d)
    if "n_latents" not in spec:
        raise ValueError(f"SAE spec {spec.get('name')!r} needs 'expansion' or 'n_latents'")
    return spec


def train_standardised(
    specs: Sequence[dict[str, Any]],
    train_rows: Rows,
    train: dict[str, Any],
    batch_size: int,
    normalisation: tuple[torch.Tensor, torch.Tensor],
    seed: int,
    device: str,
    backbone: str,
) -> dict[str, tuple[SAE, dict[str, Any]]]:
    """Train every spec (``expansion`` or ``n_latents``) on ``train_rows`` standardised by ``normalisation``
    ``(mean, scale)`` (:func:`standardisation`) and give each SAE that as its input normalisation.
    Returns ``{name: (sae, run fields)}``; a Matryoshka SAE's ``k`` field is its first level (its default
    inference ``k``, the authors' ``TopKReLU_64`` view)."""
    d = train_rows.shape[1]
    mean_d, scale_d = (t.to(device) for t in normalisation)

    def batches(n_steps: int) -> Iterator[torch.Tensor]:
        return shuffled_batches(
            train_rows, batch_size, n_steps, seed, lambda x: (x.to(device) - mean_d) / scale_d
        )

    members = train_sae_specs(
        [_with_n_latents(spec, d) for spec in specs], batches, d, train, seed, device, backbone=backbone
    )
    trained = {}
    for name, member in members.items():
        member.sae.set_input_normalization(mean_d, scale_d)
        if isinstance(member.sae, MatryoshkaSAE):
            member.fields["k"] = member.sae.inference_k
        trained[name] = (member.sae.eval(), member.fields)
    return trained


@dataclass(frozen=True)
class EmbeddingProbe:
    """A linear probe trained on original embeddings (msae.md §2.7) and the rows it is read on."""

    probe: torch.nn.Module  # raw embeddings (n, d) -> logits (n, classes)
    rows: torch.Tensor  # (n, d) original embeddings whose reconstructions are compared

    @torch.no_grad()
    def metrics(self, sae: SAE) -> dict[str, float]:
        """KL and argmax agreement of the probe on the originals vs the SAE's full-output reconstructions."""
        x_hat = sae.decode(full_codes(sae, self.rows))
        original, reconstructed = self.probe(self.rows), self.probe(x_hat)
        return {
            "probe_kl_full": probe_kl(original, reconstructed)[0],
            "probe_agreement_full": probe_agreement(original, reconstructed),
        }


def fit_probe(
    train_x: Rows,
    train_labels: torch.Tensor,
    eval_x: Rows,
    eval_labels: torch.Tensor,
    normalisation: tuple[torch.Tensor, torch.Tensor],
    options: ProbeTraining,
) -> EmbeddingProbe:
    """The authors' probe: trained on standardised then L2-normalised originals (the ``normalisation``
    ``(mean, scale)``), selected on ``eval_x``'s macro-F1; read on ``eval_x``. Labels are ints ``(n,)``.
    The returned probe takes raw embeddings (standardisation and L2 normalisation are its first steps), so
    originals and SAE reconstructions are read the same way."""
    mean, scale = normalisation
    train_t, eval_t = _as_tensor(train_x), _as_tensor(eval_x)
    n_classes = int(torch.cat([train_labels, eval_labels]).max()) + 1
    linear = train_linear_probe(
        probe_inputs((train_t - mean) / scale),
        train_labels,
        probe_inputs((eval_t - mean) / scale),
        eval_labels,
        n_classes,
        options,
    )
    return EmbeddingProbe(_StandardisedProbe(linear, mean, scale), eval_t)


class _StandardisedProbe(torch.nn.Module):
    """``x (n, d) -> linear(probe_inputs((x - mean) / scale))``: the authors' probe input (msae.md §2.7)."""

    def __init__(self, linear: torch.nn.Linear, mean: torch.Tensor, scale: torch.Tensor):
        super().__init__()
        self.linear, self.mean, self.scale = linear, mean, scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(probe_inputs((x - self.mean) / self.scale))


@dataclass(frozen=True)
class Vocabulary:
    """A concept vocabulary: its words, their text embeddings ``(n_words, d)`` in the image-embedding space,
    and the cosine at or above which a latent counts as named (msae.md §5; the authors' rule is unknown)."""

    words: tuple[str, ...]
    embeddings: torch.Tensor
    threshold: float

    def named_concepts(self, sae: SAE) -> int:
        similarity = concept_similarity(self.embeddings, concept_directions(sae))
        return count_named_concepts(similarity, self.threshold, unique=True)


class _WeightedMeans:
    """Row-weighted running means of named per-chunk means."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.rows = 0

    def add(self, n: int, values: dict[str, float]) -> None:
        for key, value in values.items():
            self.sums[key] = self.sums.get(key, 0.0) + n * value
        self.rows += n

    def means(self) -> dict[str, float]:
        return {key: total / self.rows for key, total in self.sums.items()}


@torch.no_grad()
def _chunk_metrics(sae: SAE, x: torch.Tensor, ks: Sequence[int]) -> tuple[dict[str, float], torch.Tensor]:
    """Per-chunk means of the own-output, full-output and progressive metrics, and which latents fired."""
    own = sae(x).x_hat
    codes = full_codes(sae, x)
    x_hat_full = sae.decode(codes)
    values = {
        "msae_fvu": float(fvu_per_sample(x, own).mean()),
        "msae_fvu_full": float(fvu_per_sample(x, x_hat_full).mean()),
        "msae_cs_full": float(cosine_similarity_per_sample(x, x_hat_full).mean()),
        "msae_l0_full": float((codes != 0).sum(dim=1).double().mean()),
    }
    for k, result in progressive_topk_sweep(sae, x, ks).items():
        values[f"msae_fvu_at_k{k}"] = result["fvu"][0]
        values[f"msae_cs_at_k{k}"] = result["cs"][0]
        values[f"msae_l0_at_k{k}"] = (1.0 - result["sparsity"]) * sae.n_latents
    return values, (codes != 0).any(dim=0)


@torch.no_grad()
def _cknna_means(sae: SAE, eval_rows: Rows, batch_size: int, max_batches: int | None) -> dict[str, float]:
    """Mean CKNNA over batches of ``batch_size`` evaluation rows after the authors' seeded shuffle
    (``torch.randperm``, seed 42, final partial batch skipped; as
    :func:`~saebench.metrics.cknna.cknna_batched`), at most ``max_batches`` of them; codes are computed per
    batch so the full codes of every row are never held at once."""
    n_batches = eval_rows.shape[0] // batch_size
    if n_batches == 0:
        raise ValueError(
            f"CKNNA needs at least batch_size={batch_size} evaluation rows, got {eval_rows.shape[0]}"
        )
    order = torch.randperm(
        eval_rows.shape[0], generator=torch.Generator().manual_seed(MSAE_CKNNA_SHUFFLE_SEED)
    )
    device = sae.b_enc.device
    means = _WeightedMeans()
    for b in range(n_batches if max_batches is None else min(n_batches, max_batches)):
        idx = order[b * batch_size : (b + 1) * batch_size].sort().values.numpy()
        x = _as_tensor(eval_rows[idx]).to(device)
        codes = full_codes(sae, x)
        means.add(1, {"cknna_input_codes": cknna(x, codes), "cknna_recon_input": cknna(sae.decode(codes), x)})
    return means.means()


def evaluate_embedding_sae(
    sae: SAE,
    eval_rows: Rows,
    *,
    chunk_rows: int,
    cknna_batch: int,
    cknna_max_batches: int | None = None,
    probe: EmbeddingProbe | None = None,
    vocabulary: Vocabulary | None = None,
) -> dict[str, float]:
    """Every metric of the module docstring for one trained SAE on ``eval_rows (n, d)`` (raw embeddings)."""
    device = sae.b_enc.device
    metrics = evaluate_sae(sae, (chunk.to(device) for chunk in row_chunks(eval_rows, chunk_rows)))
    ks = authors_sweep_ks(sae.n_latents)
    means, fired = _WeightedMeans(), torch.zeros(sae.n_latents, dtype=torch.bool, device=device)
    for chunk in row_chunks(eval_rows, chunk_rows):
        values, chunk_fired = _chunk_metrics(sae, chunk.to(device), ks)
        means.add(chunk.shape[0], values)
        fired |= chunk_fired
    metrics.update(means.means())
    metrics["msae_sparsity_full"] = 1.0 - metrics["msae_l0_full"] / sae.n_latents
    metrics["dead_count_full"] = float((~fired).sum())
    metrics["decoder_orthogonality"] = decoder_orthogonality(sae.W_dec)
    metrics.update(_cknna_means(sae, eval_rows, cknna_batch, cknna_max_batches))
    if probe is not None:
        metrics.update(probe.metrics(sae))
    if vocabulary is not None:
        metrics["named_concepts"] = float(vocabulary.named_concepts(sae))
    return metrics


def run_backbone(
    trained: dict[str, tuple[SAE, dict[str, Any]]],
    eval_rows: Rows,
    evaluation: dict[str, Any],
    probe: EmbeddingProbe | None = None,
    vocabulary: Vocabulary | None = None,
) -> list[Run]:
    """One :class:`~saebench.repro.pipeline.Run` per trained SAE, scored by :func:`evaluate_embedding_sae`
    with the ``evaluation`` options (``chunk_rows``, ``cknna_batch``, ``cknna_max_batches``)."""
    runs = []
    for sae, fields in trained.values():
        metrics = evaluate_embedding_sae(
            sae,
            eval_rows,
            chunk_rows=evaluation["chunk_rows"],
            cknna_batch=evaluation["cknna_batch"],
            cknna_max_batches=evaluation.get("cknna_max_batches"),
            probe=probe,
            vocabulary=vocabulary,
        )
        runs.append(Run(fields=fields, metrics=metrics))
    return runs
