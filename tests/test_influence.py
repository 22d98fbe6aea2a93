"""DICE (spec seed-wave-2.md section 7): the one-hop formula of the official code by hand, the
second-order gap to the counterfactual replay on a quadratic loss, W = 11^T/n, and the
Hessian-vector r-hop cascade against explicit Hessians."""

import itertools

import networkx as nx
import numpy as np
import pytest
import torch
from helpers import SHARDS, TRAIN_X, TRAIN_Y, path_federation, started_backend, zero_logreg_task

from fedsim.analysis.influence import (
    DecentralizedRun,
    cascade_estimate,
    cascade_ground_truth,
    classification_loss,
    mixing_matrices,
    node_batches,
    one_hop_estimate,
    one_hop_ground_truth,
    receivers,
)
from fedsim.data.datasets import Dataset
from fedsim.errors import ConfigError
from fedsim.models import logreg
from fedsim.strategies import DPSGD
from fedsim.topology import Topology, complete, metropolis_hastings, ring


def quadratic(params, batch):
    """0.5 x^T A x - b^T x for a batch (A, b)."""
    curvature, linear = batch
    return 0.5 * params @ curvature @ params - linear @ params


def quadratic_run(mixing, steps, dim, lr, seed=0, scale=None):
    """Random positive definite quadratics per (step, node); ``scale=(node, step, eps)``
    multiplies one batch by eps."""
    generator = torch.Generator().manual_seed(seed)
    n, batches = mixing[0].shape[0], []
    for step in range(steps):
        row = []
        for k in range(n):
            factor = torch.randn(dim, dim, generator=generator, dtype=torch.float64)
            batch = (factor @ factor.T / dim + 0.1 * torch.eye(dim, dtype=torch.float64),
                     torch.randn(dim, generator=generator, dtype=torch.float64))  # fmt: skip
            if scale is not None and (k, step) == scale[:2]:
                batch = (scale[2] * batch[0], scale[2] * batch[1])
            row.append(batch)
        batches.append(row)
    return DecentralizedRun(quadratic, batches, mixing[:steps], lr)


def test_one_hop_formula_by_hand():
    # Path 0 - 1 - 2, W = [[2/3, 1/3, 0], [1/3, 1/3, 1/3], [0, 1/3, 2/3]], d = 1, loss -b x with
    # b = (2, 4, 6), lr 1/2, test loss x^2 / 2, theta^0 = (1, 2, 3); batch of node 1 at step 0.
    # Half step (2, 4, 6), theta^1 = (8/3, 4, 16/3); g_1 = -4, g'_1 = 2 (before the step),
    # g'_0 = 8/3, g'_2 = 16/3:  E = 1/2 (8 + 4/3 (8/3 + 16/3)) = 28/3.
    # Without the batch: half step (2, 2, 6), theta^1_0 = 2, theta^1_2 = 14/3:
    # GT = (16 - 4)/2 + ((8/3)^2 - 4)/2 + ((16/3)^2 - (14/3)^2)/2 = 6 + 44/9 = 98/9.
    mixing = mixing_matrices(Topology(nx.path_graph(3), metropolis_hastings), 2)
    one = torch.ones(1, 1, dtype=torch.float64)
    batches = [[(0 * one, torch.tensor([b], dtype=torch.float64)) for b in (2.0, 4.0, 6.0)]] * 2
    run = DecentralizedRun(quadratic, batches, mixing, lr=0.5)
    trajectory = run.trajectory(torch.tensor([[1.0], [2.0], [3.0]], dtype=torch.float64))
    test = (one, torch.zeros(1, dtype=torch.float64))
    assert receivers(mixing[0], 1) == [0, 2]
    assert one_hop_estimate(run, trajectory, test, node=1, step=0) == pytest.approx(28 / 3)
    assert one_hop_ground_truth(run, trajectory, test, node=1, step=0) == pytest.approx(98 / 9)
    # Node 0's batch reaches node 1 only (W_20 = 0): g_0 = -2, g'_0 = 1, g'_1 = 4.
    expected = 0.5 * (1.0 * 2.0 + (1 / 3) * 4.0 * 2.0)
    assert one_hop_estimate(run, trajectory, test, node=0, step=0) == pytest.approx(expected)


def test_quadratic_gap_is_exactly_the_second_order_term_and_shrinks_with_the_batch():
    mixing = mixing_matrices(Topology(ring(4, 0), metropolis_hastings), 5)
    node, step, hops, test_curvature = 1, 1, 3, torch.diag(torch.tensor([1.0, 2.0, 0.5]))
    test = (test_curvature.double(), torch.tensor([0.3, -0.2, 0.1], dtype=torch.float64))
    ratios = []
    for eps in (1.0, 0.1, 0.01):
        run = quadratic_run(mixing, 5, 3, lr=0.1, scale=(node, step, eps))
        trajectory = run.trajectory(torch.ones(4, 3, dtype=torch.float64))
        estimate = cascade_estimate(run, trajectory, test, node, step, hops)
        truth = cascade_ground_truth(run, trajectory, test, node, step, hops)
        # SGD on quadratics is affine: the replay's perturbation is exactly what the Hessian
        # products carried, so GT - E is the quadratic remainder -/+ delta^T A' delta / 2.
        without = run.trajectory(trajectory[step], start=step, steps=hops, unused=(node, step))
        delta = trajectory[step : step + hops + 1] - without
        remainder = -0.5 * ((delta @ test[0]) * delta).sum(dim=-1)
        own = run.lr * run.gradient(trajectory[step, node], run.batches[step][node])
        remainder[0] = torch.zeros(4, dtype=torch.float64)
        remainder[0, node] = 0.5 * own @ test[0] @ own  # row 0: gradient taken before the step
        torch.testing.assert_close(truth - estimate, remainder, rtol=1e-9, atol=1e-12)
        assert estimate[hops].abs().sum() > 0  # the cascade reached hop 3
        ratios.append(float((truth - estimate).abs().sum() / estimate.abs().sum()))
    assert ratios[0] > ratios[1] > ratios[2]
    assert ratios[2] / ratios[1] == pytest.approx(0.1, rel=0.1)


def test_one_hop_is_rows_zero_and_one_of_the_cascade():
    mixing = mixing_matrices(Topology(ring(5, 0), metropolis_hastings), 4)
    run = quadratic_run(mixing, 4, 2, lr=0.05, seed=3)
    trajectory = run.trajectory(torch.randn(5, 2, dtype=torch.float64))
    test = run.batches[0][0]
    weights = torch.tensor([1.0, 0.5, 2.0, 1.0, 0.25], dtype=torch.float64)
    for table_of, one_hop in ((cascade_estimate, one_hop_estimate),
                              (cascade_ground_truth, one_hop_ground_truth)):  # fmt: skip
        table = table_of(run, trajectory, test, 2, 1, 1, weights)
        assert table[1, 0] == 0 and table[1, 4] == 0  # beyond one hop on the ring
        expected = table[0, 2] + table[1, 1] + table[1, 3]  # not node 2's own post-merge change
        assert one_hop(run, trajectory, test, 2, 1, weights) == pytest.approx(float(expected))


def test_uniform_weights_make_every_node_equally_influenced():
    n = 4
    mixing = mixing_matrices(Topology(complete(n, 0), metropolis_hastings), 3)
    torch.testing.assert_close(mixing[0], torch.full((n, n), 1 / n, dtype=torch.float64))
    model = logreg((3,), 2)
    generator = torch.Generator().manual_seed(0)
    x, y = torch.randn(n, 5, 3, generator=generator).double(), torch.tensor([0, 1, 1, 0, 1])
    shared = (x[0], y)  # the same batch at nodes 0 and 2 in step 1
    batches = [[(x[k], y) for k in range(n)] for _ in range(3)]
    batches[1][2] = shared
    run = DecentralizedRun(classification_loss(model), batches, mixing, lr=0.3)
    trajectory = run.trajectory(torch.randn(n, 8, generator=generator).double())
    test = (torch.randn(7, 3, generator=generator).double(), torch.tensor([0, 1, 0, 1, 1, 0, 0]))
    table = cascade_estimate(run, trajectory, test, 0, 1, 1)
    torch.testing.assert_close(table[1], table[1, :1].expand(n))  # 1/n on every node
    assert table[1, 0] != 0
    from_two = one_hop_estimate(run, trajectory, test, 2, 1)
    assert one_hop_estimate(run, trajectory, test, 0, 1) == pytest.approx(from_two, rel=1e-12)
    # On a ring the one-hop weights differ: the asymmetry the uniform matrix removes.
    ring_run = DecentralizedRun(run.loss, batches, mixing_matrices(
        Topology(ring(n, 0), metropolis_hastings), 3), lr=0.3)  # fmt: skip
    ring_table = cascade_estimate(ring_run, ring_run.trajectory(trajectory[0]), test, 0, 1, 1)
    assert ring_table[1, 2] == 0 and ring_table[1, 1] != 0


def test_hessian_vector_cascade_equals_explicit_hessians_over_walks():
    n, dim, hops, node, step, lr = 4, 8, 3, 0, 1, 0.4
    mixing = mixing_matrices(Topology(ring(n, 0), metropolis_hastings), 5)
    mixing[2] = mixing_matrices(Topology(nx.path_graph(n), metropolis_hastings), 1)[0]
    generator = torch.Generator().manual_seed(1)
    batches = [[(torch.randn(6, 3, generator=generator).double(),
                 torch.randint(2, (6,), generator=generator)) for _ in range(n)]
               for _ in range(5)]  # fmt: skip
    run = DecentralizedRun(classification_loss(logreg((3,), 2)), batches, mixing, lr)
    trajectory = run.trajectory(torch.randn(n, dim, generator=generator).double())
    test = batches[4][3]
    carried_gradient = run.gradient(trajectory[step, node], batches[step][node])
    expected = torch.zeros(hops + 1, n, dtype=torch.float64)
    expected[0, node] = -lr * run.gradient(trajectory[step, node], test) @ carried_gradient
    hessians = {
        (s, k): torch.autograd.functional.hessian(
            lambda p, b=batches[s][k]: run.loss(p, b), trajectory[s, k]
        )
        for s in range(step + 1, step + hops)
        for k in range(n)
    }
    for length in range(1, hops + 1):
        for walk in itertools.product(range(n), repeat=length):
            path = (node, *walk)
            weight = np.prod([float(mixing[step + s - 1][path[s], path[s - 1]])
                              for s in range(1, length + 1)])  # fmt: skip
            if weight == 0:
                continue
            vector = carried_gradient
            for s in range(1, length):  # (I - lr H) at k_s, step t + s, applied from the right
                vector = vector - lr * hessians[step + s, path[s]] @ vector
            end = path[-1]
            test_gradient = run.gradient(trajectory[step + length, end], test)
            expected[length, end] += -lr * weight * test_gradient @ vector
    torch.testing.assert_close(
        cascade_estimate(run, trajectory, test, node, step, hops), expected, rtol=1e-10, atol=1e-14
    )


def test_trajectory_is_fedsims_dpsgd_round():
    task = zero_logreg_task(lr=0.5)
    federation, backend = path_federation(task), started_backend(task, num_rows=3)
    initial = backend.params.clone()
    for round_idx in range(3):
        backend.execute(
            DPSGD(local_epochs=None, local_steps=1).plan(round_idx, federation), round_idx
        )
    dataset = Dataset("hand", TRAIN_X, TRAIN_Y, TRAIN_X, TRAIN_Y, num_classes=2)
    batches = node_batches(dataset, SHARDS, seed=0, num_steps=3, batch_size=4, dtype=torch.float32)
    run = DecentralizedRun(
        classification_loss(task.model),
        batches,
        mixing_matrices(federation.topology, 3, dtype=torch.float32),
        lr=0.5,
    )
    torch.testing.assert_close(run.trajectory(initial)[-1], backend.params)


def test_bad_input_is_refused_with_the_setting():
    mixing = mixing_matrices(Topology(ring(3, 0), metropolis_hastings), 2)
    run = quadratic_run(mixing, 2, 2, lr=0.1)
    trajectory = run.trajectory(torch.zeros(3, 2, dtype=torch.float64))
    with pytest.raises(ConfigError, match="node=3 must be a node id in 0..2"):
        one_hop_estimate(run, trajectory, run.batches[0][0], 3, 0)
    with pytest.raises(ConfigError, match="step=1 with hops=2 needs models up to step 3"):
        cascade_estimate(run, trajectory, run.batches[0][0], 0, 1, 2)
    with pytest.raises(ConfigError, match="lr=0 must be > 0"):
        DecentralizedRun(quadratic, run.batches, mixing, 0)
