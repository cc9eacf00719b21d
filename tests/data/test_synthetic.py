"""Planted worlds: the generative model holds exactly, streams are reproducible and resumable."""

from __future__ import annotations

import pytest
import torch

from saebench.data import HierarchyConfig, PlantedWorld, PlantedWorldConfig


@pytest.fixture(scope="module")
def world() -> PlantedWorld:
    return PlantedWorld(d=64, n_atoms=256, k=8, seed=0)


def test_shapes_dtypes_and_unit_atoms(world):
    assert world.true_atoms.shape == (256, 64) and world.true_atoms.dtype == torch.float32
    torch.testing.assert_close(world.true_atoms.norm(dim=1), torch.ones(256))
    batch = world.batch(0, 32)
    assert batch.x.shape == (32, 64) and batch.x.dtype == torch.float32
    assert batch.codes.shape == (32, 256) and batch.codes.dtype == torch.float32


def test_exactly_k_non_negative_coefficients_and_noiseless_data(world):
    sample = world.sample(500)
    assert ((sample.codes > 0).sum(dim=1) == 8).all()
    active = sample.codes[sample.codes > 0]
    assert active.min() >= 0.5 and active.max() <= 1.5  # the default uniform [0.5, 1.5] coefficients
    # float32 matmul of the same tensors: tight tolerance
    torch.testing.assert_close(sample.x, sample.codes @ world.true_atoms, rtol=0, atol=1e-6)


def test_noise_has_the_requested_std():
    world = PlantedWorld(d=64, n_atoms=256, k=8, noise_std=0.05, seed=1)
    sample = world.sample(2000)
    residual = sample.x - sample.codes @ world.true_atoms
    # 128,000 Gaussian draws: the std estimate has relative standard error 1/sqrt(2N) = 0.2%; allow 2%
    assert residual.std().item() == pytest.approx(0.05, rel=0.02)


@pytest.mark.parametrize("active_count", ["poisson", "bernoulli"])
def test_random_active_counts_average_k(active_count):
    world = PlantedWorld(d=16, n_atoms=128, k=8, active_count=active_count, seed=2)
    counts = (world.sample(20_000).codes > 0).sum(dim=1).float()
    # Poisson(8) over 20,000 rows: the mean's standard error is sqrt(8 / 20000) = 0.02; allow 5 of them
    assert counts.mean().item() == pytest.approx(8.0, abs=0.1)
    assert counts.std().item() > 1.0  # not a constant count (Poisson std ~ 2.8, binomial ~ 2.7)


def test_exponential_coefficients():
    world = PlantedWorld(d=16, n_atoms=64, k=4, coefficient_distribution="exponential", seed=3)
    active = world.sample(20_000).codes
    active = active[active > 0]
    # min 0.5 + Exp(1) * scale 1.0: mean 1.5, std 1 over 80,000 draws (standard error 0.004); allow 0.03
    assert active.min().item() >= 0.5
    assert active.mean().item() == pytest.approx(1.5, abs=0.03)


@pytest.mark.parametrize("rho", [0.0, 0.3])
def test_atom_coherence_sets_the_mean_pairwise_cosine(rho):
    atoms = PlantedWorld(d=64, n_atoms=256, k=8, atom_coherence=rho, seed=4).true_atoms.double()
    cosines = atoms @ atoms.T
    off_diagonal = cosines[~torch.eye(256, dtype=torch.bool)]
    # normalisation and finite d shift the mean pairwise cosine by O(1/d) ~ 0.02 around rho
    assert off_diagonal.mean().item() == pytest.approx(rho, abs=0.03)


def test_same_seed_same_stream_and_different_seed_differs(world):
    again = PlantedWorld(d=64, n_atoms=256, k=8, seed=0)
    assert torch.equal(world.true_atoms, again.true_atoms)
    assert torch.equal(world.batch(5, 16).x, again.batch(5, 16).x)
    other = PlantedWorld(d=64, n_atoms=256, k=8, seed=1)
    assert not torch.equal(world.true_atoms, other.true_atoms)
    assert not torch.equal(world.batch(5, 16).codes, other.batch(5, 16).codes)


def test_streams_resume_from_any_batch(world):
    full = list(world.batches(batch_size=16, n_batches=6))
    resumed = list(world.batches(16, 2)) + list(world.batches(16, n_batches=4, start_batch=2))
    assert len(full) == len(resumed) == 6
    assert all(torch.equal(a, b) for a, b in zip(full, resumed, strict=True))
    assert not torch.equal(full[0], full[1])
    assert torch.equal(next(iter(world.batches(16, start_batch=1000))), world.batch(1000, 16).x)


def test_infinite_stream_and_held_out_samples(world):
    stream = world.batches(16)
    first = [next(stream) for _ in range(3)]
    assert torch.equal(first[2], world.batch(2, 16).x)
    assert not torch.equal(world.sample(16).x, world.batch(0, 16).x)
    assert not torch.equal(world.sample(16, stream=1).x, world.sample(16).x)
    assert torch.equal(world.sample(16, stream=1).x, world.sample(16, stream=1).x)


@pytest.fixture(scope="module")
def hierarchical() -> PlantedWorld:
    return PlantedWorld(
        d=32, n_atoms=64, k=3, hierarchy=HierarchyConfig(n_parents=4, children_per_parent=3), seed=5
    )


def test_hierarchy_layout(hierarchical):
    # parents 0..3, children 4..15 in groups of three, free atoms 16..63
    assert hierarchical.parent_of[:4].tolist() == [-1] * 4
    assert hierarchical.parent_of[4:16].tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert (hierarchical.parent_of[16:] == -1).all()
    assert hierarchical.children_of(2).tolist() == [10, 11, 12]
    assert hierarchical.children_of(20).tolist() == []


def test_children_fire_only_with_their_parent_exactly_one_at_a_time(hierarchical):
    active = hierarchical.sample(5000).codes > 0
    parents, children = active[:, :4], active[:, 4:16].reshape(-1, 4, 3)
    assert (
        (children.sum(dim=2) == 1) == parents
    ).all()  # child_probability 1, exclusive: one child per parent
    top_level = torch.cat([active[:, :4], active[:, 16:]], dim=1)
    assert (top_level.sum(dim=1) == 3).all()  # k counts parents and free atoms only
    assert parents.any()  # 4 parents among 52 top-level atoms, 3 drawn per row: parents do occur


def test_independent_children_with_a_probability():
    hierarchy = HierarchyConfig(
        n_parents=2, children_per_parent=4, child_probability=0.5, exclusive_children=False
    )
    world = PlantedWorld(d=16, n_atoms=20, k=2, hierarchy=hierarchy, seed=6)
    active = world.sample(20_000).codes > 0
    parent_of_child = active[:, :2].repeat_interleave(4, dim=1)
    children = active[:, 2:10]
    assert not (children & ~parent_of_child).any()
    rate = children[parent_of_child].float().mean().item()
    # ~ 20,000 * 2/14 * 2 * 4 ~ 23,000 gated children: standard error of the rate ~ 0.003; allow 0.02
    assert rate == pytest.approx(0.5, abs=0.02)


def test_config_round_trips_through_a_dict():
    config = PlantedWorldConfig(hierarchy=HierarchyConfig(n_parents=2, children_per_parent=2), seed=9)
    assert PlantedWorldConfig(**config.to_dict()) == config


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"k": 300}, r"k must lie in \[1, 256\]"),
        ({"k": 0}, r"k must lie in"),
        ({"active_count": "geometric"}, r"unknown active_count 'geometric'; choose one of \('exact'"),
        ({"coefficient_distribution": "gamma"}, r"choose one of \('uniform', 'exponential'\)"),
        ({"coefficient_min": -1.0}, r"coefficients must be non-negative"),
        ({"noise_std": -0.1}, r"noise_std must be >= 0"),
        ({"atom_coherence": 1.0}, r"atom_coherence must lie in \[0, 1\)"),
        ({"seed": -1}, r"seed must be a non-negative int"),
        ({"hierarchy": HierarchyConfig(100, 3)}, r"more than n_atoms=256"),
    ],
)
def test_bad_configs_are_rejected(fields, message):
    with pytest.raises(ValueError, match=message):
        PlantedWorldConfig(**fields)


def test_bad_stream_arguments_are_rejected(world):
    with pytest.raises(ValueError, match=r"batch_size must be an int >= 1"):
        world.batches(0)
    with pytest.raises(ValueError, match=r"start_batch must be an int >= 0"):
        world.batches(8, start_batch=-1)
    with pytest.raises(TypeError, match=r"either a PlantedWorldConfig or keyword fields"):
        PlantedWorld(PlantedWorldConfig(), k=3)
