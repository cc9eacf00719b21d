"""The orbit toy model: a cyclic group action of the right order, orbits built from it, ground truth."""

from __future__ import annotations

import pytest
import torch

from saebench.data.orbits import OrbitWorld, OrbitWorldConfig, cyclic_group_action


@pytest.mark.parametrize("group_order", [2, 4])
def test_group_action_is_orthogonal_of_exact_order(group_order):
    m = cyclic_group_action(8, group_order, seed=1)
    identity = torch.eye(8)
    torch.testing.assert_close(m @ m.T, identity, atol=1e-5, rtol=0)  # float32 rounding of Q P Q^T
    torch.testing.assert_close(torch.linalg.matrix_power(m, group_order), identity, atol=1e-5, rtol=0)
    for p in range(1, group_order):  # no smaller power is the identity: the orbits have G distinct members
        assert (torch.linalg.matrix_power(m, p) - identity).abs().max() > 0.1


def test_orbits_and_atoms():
    world = OrbitWorld(world={"d": 8, "n_atoms": 3, "k": 1}, group_order=4, seed=2)
    orbits = next(world.orbit_batches(5, 1))
    assert orbits.shape == (5, 4, 8)
    torch.testing.assert_close(orbits[:, 1], orbits[:, 0] @ world.M.T)
    torch.testing.assert_close(orbits[:, 3], orbits[:, 2] @ world.M.T)
    members = next(world.member_batches(5, 1))
    torch.testing.assert_close(members, orbits.reshape(20, 8))
    # true atoms: M^r F_j at row r * n_atoms + j
    atoms = world.true_atoms
    assert atoms.shape == (12, 8)
    torch.testing.assert_close(
        atoms[3 * 2 + 1], world.orbit_atoms[1] @ torch.linalg.matrix_power(world.M, 2).T
    )
    # with k = 1 and no noise, each canonical sample is one coefficient times one orbit atom
    canonical = orbits[:, 0]
    cosines = (canonical / canonical.norm(dim=1, keepdim=True)) @ world.orbit_atoms.T
    torch.testing.assert_close(cosines.abs().max(dim=1).values, torch.ones(5))


def test_deterministic_and_held_out():
    a = OrbitWorld(OrbitWorldConfig(world={"d": 8, "n_atoms": 3, "k": 1}, seed=5))
    b = OrbitWorld(world={"d": 8, "n_atoms": 3, "k": 1}, seed=5)
    torch.testing.assert_close(a.sample_orbits(4), b.sample_orbits(4))
    assert not torch.equal(a.sample_orbits(4), next(a.orbit_batches(4, 1)))
    assert a.config.world.seed == 5  # the world's seed follows the orbit world's


def test_bad_config():
    with pytest.raises(ValueError, match="multiple of group_order"):
        OrbitWorldConfig(world={"d": 6, "n_atoms": 3, "k": 1}, group_order=4)
    with pytest.raises(ValueError, match="multiple of group_order"):
        cyclic_group_action(6, 4)
