"""The noise of a private step: covariance R across nodes, fresh for every coordinate, round
and step; pairwise and zero-sum parts cancel in the network sum; a node's noise does not
depend on who else is drawn; shared seeds and one central draw agree."""

import networkx as nx
import numpy as np
import pytest
import torch

from fedsim.privacy.covariance import NoiseCovariance
from fedsim.privacy.noise import NoisyStep

NODES = torch.arange(5)
RING_EDGES = np.array([[0, 1], [1, 2], [2, 3], [3, 4], [0, 4]])
DIM = 40_000  # coordinates are independent draws: the sample for covariance estimates


def decor(independent=0.5, pairs=2.0):
    return NoiseCovariance(5, independent, RING_EDGES, pairs, None)


def dense(independent=0.5):
    factor = np.random.default_rng(0).normal(size=(5, 3))
    return NoiseCovariance(5, independent, np.zeros((0, 2), dtype=np.int64), 0.0, factor)


def draw(covariance, sampler="shared_seeds", round_idx=0, step=0, nodes=NODES):
    step_of = NoisyStep(0.1, covariance, seed=3, batch_size=1, sampler=sampler)
    return step_of.draw(nodes, round_idx, step, DIM)


def assert_covariance(noise, expected):
    """Sample covariance across coordinates within 5 standard errors of R."""
    estimate = (noise @ noise.T / noise.shape[1]).numpy()
    variances = np.diag(expected)
    error = np.sqrt((np.outer(variances, variances) + expected**2) / noise.shape[1])
    assert np.all(np.abs(estimate - expected) < 5 * error)


@pytest.mark.parametrize("make", [decor, dense])
@pytest.mark.parametrize("sampler", ["shared_seeds", "central"])
def test_draws_have_covariance_r(make, sampler):
    covariance = make()
    assert_covariance(draw(covariance, sampler), covariance.matrix())


def test_decor_laplacian_is_the_ring_laplacian():
    laplacian = nx.laplacian_matrix(nx.cycle_graph(5)).toarray()
    assert np.allclose(decor(0.0, 1.0).matrix(), laplacian)


@pytest.mark.parametrize("sampler", ["shared_seeds", "central"])
def test_pairwise_noise_cancels_in_the_network_sum(sampler):
    noise = draw(decor(independent=0.0), sampler)
    assert noise.abs().max() > 1
    assert torch.allclose(noise.sum(dim=0), torch.zeros(DIM, dtype=torch.float64), atol=1e-9)


def test_zero_sum_noise_cancels_in_the_network_sum():
    projector = np.eye(5) - 1 / 5
    covariance = NoiseCovariance(5, 0.0, np.zeros((0, 2), dtype=np.int64), 0.0, 3 * projector)
    noise = draw(covariance)
    assert torch.allclose(noise.sum(dim=0), torch.zeros(DIM, dtype=torch.float64), atol=1e-9)


def wide(num_nodes=64):
    """All three parts at once, on 64 nodes: a ring's pairs and a dense factor."""
    edges = np.array([[i, (i + 1) % num_nodes] for i in range(num_nodes)])
    edges.sort(axis=1)
    factor = np.random.default_rng(1).normal(size=(num_nodes, 7))
    return NoiseCovariance(num_nodes, 0.5, edges, 2.0, factor)


@pytest.mark.parametrize("make", [decor, dense])
def test_a_nodes_noise_does_not_depend_on_who_else_is_drawn(make):
    everyone = draw(make())
    for node in range(5):
        alone = draw(make(), nodes=torch.tensor([node]))
        assert torch.equal(alone[0], everyone[node])  # any chunk, any shard: same bits


@pytest.mark.parametrize("sampler", ["shared_seeds", "central"])
def test_a_nodes_noise_has_the_same_bits_in_batches_of_any_size(sampler):
    step = NoisyStep(0.1, wide(), seed=3, batch_size=1, sampler=sampler)
    node = 3
    rows = {}
    for size in (1, 2, 5, 64):
        batch = torch.cat([torch.tensor([node]), torch.arange(64)[torch.arange(64) != node]])
        noise = step.draw(batch[:size].flip(0), round_idx=2, step=1, dim=1_003)
        rows[size] = noise[size - 1]  # flipped: node 3 is the batch's last row
    for size in (2, 5, 64):
        assert torch.equal(rows[size], rows[1]), f"batch of {size} rows"


def test_draws_are_fresh_every_round_and_step():
    covariance = decor()
    first = draw(covariance)
    for other in (draw(covariance, round_idx=1), draw(covariance, step=1)):
        joint = torch.cat([first, other])
        expected = np.kron(np.eye(2), covariance.matrix())  # no correlation across draws
        assert_covariance(joint, expected)


def test_shared_seeds_and_central_sampling_agree_in_distribution():
    covariance = dense()
    seeds, central = draw(covariance), draw(covariance, "central")
    assert not torch.allclose(seeds, central)  # different draws ...
    for noise in (seeds, central):  # ... of the same law
        assert_covariance(noise, covariance.matrix())
