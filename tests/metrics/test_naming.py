"""Concept naming and similarity search (msae.md §5), on hand-built vectors."""

from __future__ import annotations

import pytest
import torch

from saebench.metrics.naming import (
    concept_directions,
    concept_similarity,
    count_named_concepts,
    name_concepts,
    set_concept,
    similarity_search,
)
from saebench.sae import create_sae


def test_concept_directions_undo_the_input_normalisation():
    sae = create_sae("topk", d_in=2, n_latents=2, k=1)
    with torch.no_grad():
        sae.W_dec.copy_(torch.eye(2))
        sae.b_dec.copy_(torch.tensor([1.0, 1.0]))
    sae.set_input_normalization(torch.tensor([10.0, 0.0]), 2.0)
    # row * scale + mean: (1, 0) -> (12, 0); (0, 1) -> (10, 2); with bias (2, 1) -> (14, 2)
    assert concept_directions(sae).tolist() == [[12.0, 0.0], [10.0, 2.0]]
    assert concept_directions(sae, include_bias=True)[0].tolist() == [14.0, 2.0]


def test_names_are_the_most_similar_entries():
    vocab = ["cat", "dog", "car"]
    embeddings = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]])
    directions = torch.tensor([[0.0, 2.0], [1.0, 0.1]])
    similarity = concept_similarity(embeddings, directions)
    # latent 0 points along y: car (cos 1); latent 1 ~ x: cat cos 1/sqrt(1.01) = 0.995 beats dog 0.856
    names = name_concepts(similarity, vocab)
    assert names.names == ["car", "cat"]
    assert names.similarity[1].item() == pytest.approx(1 / 1.01**0.5)


def test_count_named_concepts_threshold_and_uniqueness():
    # best entry per latent: 0 -> entry 0 (0.9), 1 -> entry 0 (0.8), 2 -> entry 1 (0.2)
    similarity = torch.tensor([[0.9, 0.8, 0.1], [0.1, 0.3, 0.2]])
    assert count_named_concepts(similarity, 0.5, unique=False) == 2
    assert count_named_concepts(similarity, 0.5) == 1  # both latents are "entry 0": one name
    assert count_named_concepts(similarity, 0.1) == 2  # entry 0 and entry 1


def test_similarity_search_ranks_by_cosine_in_code_space():
    bank = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 1.0, 0.0]])
    query = torch.tensor([[2.0, 0.1, 0.0]])
    assert similarity_search(query, bank, 2).tolist() == [[0, 2]]
    edited = set_concept(query, 1, 2.0)  # now (2, 2, 0): the mixed row is the best match
    assert similarity_search(edited, bank, 1).tolist() == [[2]]
    assert query[0, 1].item() == pytest.approx(0.1)  # set_concept copies


def test_bad_input_is_a_clear_error():
    with pytest.raises(ValueError, match="vocab=2"):
        name_concepts(torch.zeros(3, 4), ["a", "b"])
    with pytest.raises(ValueError, match="top_n"):
        similarity_search(torch.ones(1, 2), torch.ones(2, 2), 3)
    with pytest.raises(ValueError, match="latent"):
        set_concept(torch.ones(1, 2), 2, 0.0)
