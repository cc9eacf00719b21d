"""Concept naming with a vocabulary and concept-based similarity search (MSAE §5; code ``sae_naming.py``,
after Discover-then-Name, Rao et al. 2024; msae.md §5).

Naming: the cosine matrix ``(vocab, n_latents)`` between the text embeddings of a vocabulary (raw CLIP space,
no centring or scaling) and the SAE's decoder rows mapped back to the input space (:func:`concept_directions`:
``W_dec * input_scale + input_mean``, i.e. the authors' ``row / s + mu``, without ``b_dec`` unless asked).
Each latent is named by its most similar vocabulary entry (:func:`name_concepts`). The authors' rule for a
"valid" named concept is not in their code, so :func:`count_named_concepts` takes the similarity threshold
as an argument and optionally requires the name to be unique (each entry names at most its best latent).

Search: images are compared in code space by cosine (:func:`similarity_search`), and a concept is
manipulated by setting its latent before decoding (:func:`set_concept`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch

from saebench.metrics.alignment import cosine_matrix
from saebench.metrics.validation import as_rows
from saebench.sae.base import SAE

__all__ = [
    "ConceptNames",
    "concept_directions",
    "concept_similarity",
    "name_concepts",
    "count_named_concepts",
    "similarity_search",
    "set_concept",
]


class ConceptNames(NamedTuple):
    """Per latent: ``names`` (its best vocabulary entry), ``similarity`` ``(n_latents,)`` (that cosine) and
    ``index`` ``(n_latents,)`` (the entry's row in the vocabulary)."""

    names: list[str]
    similarity: torch.Tensor
    index: torch.Tensor


def concept_directions(sae: SAE, include_bias: bool = False) -> torch.Tensor:
    """``(n_latents, d_in)`` decoder rows in the input space: ``W_dec * input_scale + input_mean`` (plus
    ``b_dec * input_scale`` with ``include_bias``; the authors' ``--use-bias``)."""
    with torch.no_grad():
        rows = sae.W_dec + sae.b_dec if include_bias else sae.W_dec
        return (rows * sae.input_scale + sae.input_mean).detach()


def concept_similarity(vocab_embeddings: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
    """``(vocab, n_latents)`` cosines of vocabulary embeddings ``(vocab, d)`` and directions ``(n, d)``."""
    return cosine_matrix(vocab_embeddings, directions)


def name_concepts(similarity: torch.Tensor, vocabulary: Sequence[str]) -> ConceptNames:
    """Name every latent (column of ``similarity (vocab, n_latents)``) by its most similar entry."""
    if similarity.ndim != 2 or similarity.shape[0] != len(vocabulary):
        raise ValueError(
            f"similarity must be (vocab={len(vocabulary)}, n_latents), got {tuple(similarity.shape)}"
        )
    best, index = similarity.max(dim=0)
    return ConceptNames([vocabulary[i] for i in index.tolist()], best, index)


def count_named_concepts(similarity: torch.Tensor, threshold: float, unique: bool = True) -> int:
    """Latents whose best vocabulary cosine is ``>= threshold``; with ``unique``, a vocabulary entry counts
    for at most one latent (the one it is most similar to), so synonyms of one direction count once."""
    best, index = similarity.max(dim=0)
    named = best >= threshold
    if not unique:
        return int(named.sum())
    return len(set(index[named].tolist()))


def similarity_search(query_codes: torch.Tensor, bank_codes: torch.Tensor, top_n: int) -> torch.Tensor:
    """``(queries, top_n)`` indices of the bank rows ``(bank, n_latents)`` most cosine-similar to each query
    ``(queries, n_latents)`` in code space, best first."""
    queries, bank = as_rows(query_codes, "query_codes"), as_rows(bank_codes, "bank_codes")
    if not 0 < top_n <= bank.shape[0]:
        raise ValueError(f"top_n must lie in [1, {bank.shape[0]}], got {top_n}")
    scores = torch.nn.functional.normalize(queries, dim=1) @ torch.nn.functional.normalize(bank, dim=1).T
    return scores.topk(top_n, dim=1).indices


def set_concept(codes: torch.Tensor, latent: int, value: float) -> torch.Tensor:
    """A copy of ``codes (..., n_latents)`` with latent ``latent`` set to ``value`` (concept manipulation
    before decoding or searching)."""
    if not 0 <= latent < codes.shape[-1]:
        raise ValueError(f"latent must lie in [0, {codes.shape[-1] - 1}], got {latent}")
    edited = codes.clone()
    edited[..., latent] = value
    return edited
