"""CHOCO-SGD and CHOCO-Gossip: exact gossip without compression, the replicas' update and the
consensus step by hand, the node average kept, and the paper's consensus experiment (linear
convergence with top-1% where naive compressed gossip stalls)."""

import networkx as nx
import numpy as np
import pytest
import scipy.sparse as sp
import torch
from conftest import compose_config
from helpers import path_federation, run_rounds, started_backend, zero_logreg_task

from fedsim.backends.local import LocalBackend
from fedsim.build import build_simulation
from fedsim.compression.topk import TopK
from fedsim.data.datasets import Dataset
from fedsim.errors import ConfigError
from fedsim.messages import MessageTransforms
from fedsim.models import logreg
from fedsim.plans import Gossip, RoundPlan
from fedsim.strategies import DPSGD
from fedsim.strategies.choco import Choco
from fedsim.task import Task
from fedsim.training.schedule import NodeData
from fedsim.training.sgd import SGD

PATH = sp.csr_array(np.array([[2, 1, 0], [1, 1, 1], [0, 1, 2]]) / 3)


def test_without_compression_and_a_unit_step_choco_is_dpsgd():
    """Replicas equal the models once updated, so x + (W - I) x = W x."""
    choco = run_rounds(Choco(consensus_lr=1.0), rounds=3)
    dpsgd = run_rounds(DPSGD(), rounds=3)
    torch.testing.assert_close(choco.params, dpsgd.params)


def test_one_consensus_step_by_hand():
    """Top-1 of x - x^ (replicas zero at first), then x + gamma (W x^ - x^)."""
    task = zero_logreg_task()
    backend = started_backend(task, num_rows=3)
    backend.start(task, 3, messages=MessageTransforms.of([TopK(ratio=None, k=1)]))
    models = torch.tensor([[1.0, -4.0, 0.5], [2.0, 3.0, -1.0], [0.0, 1.0, 7.0]])
    backend.params[:, :3] = models
    backend.params[:, 3:] = 0
    backend.execute(RoundPlan((Gossip(PATH, step_size=0.5, replicas=True),)), round_idx=0)
    replicas = torch.tensor([[0.0, -4.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 7.0]])
    weights = torch.as_tensor(PATH.toarray(), dtype=torch.float32)
    expected = models + 0.5 * (weights @ replicas - replicas)
    torch.testing.assert_close(backend.slot("replica")[:, :3], replicas)
    torch.testing.assert_close(backend.params[:, :3], expected)


def test_the_consensus_step_keeps_the_node_average():
    """1^T (W - I) = 0: whatever the replicas, the average moves only by training."""
    task = zero_logreg_task()
    backend = started_backend(task, num_rows=3)
    backend.start(task, 3, messages=MessageTransforms.of([TopK(ratio=None, k=2)]))
    backend.params.copy_(torch.randn(3, 6, generator=torch.Generator().manual_seed(1)))
    average = backend.params.double().mean(dim=0)
    for round_idx in range(20):
        backend.execute(RoundPlan((Gossip(PATH, step_size=0.3, replicas=True),)), round_idx)
    torch.testing.assert_close(backend.params.double().mean(dim=0), average, rtol=0, atol=1e-6)


def test_choco_gossip_only_gossips():
    (step,) = Choco(gossip_only=True).plan(0, path_federation(zero_logreg_task())).steps
    assert isinstance(step, Gossip) and step.replicas and step.step_size == 0.5


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["strategy.consensus_lr=0"], r"strategy.consensus_lr=0.0 must be in \(0, 1\]"),
        (["aggregator=median"], "moves by a step size .* use aggregator=mean"),
    ],
)
def test_bad_settings_are_refused_in_one_line_before_any_work(overrides, message):
    config = compose_config("strategy=choco", "num_nodes=12", "topology=ring", *overrides)
    with pytest.raises(ConfigError, match=message):
        build_simulation(config)


def ring_consensus(compressor, gamma, replicas, rounds):
    """The paper's consensus experiment: 25 nodes on a ring (weights 1/3), d = 2000, the
    models N(0, 1); the mean squared distance to the average every 250 rounds."""
    num_nodes, features = 25, 199  # logistic regression 199 -> 10 classes: 2,000 parameters
    x, y = torch.zeros(num_nodes, features), torch.arange(num_nodes) % 10
    shards = [np.array([node]) for node in range(num_nodes)]
    data = Dataset("zeros", x, y, x, y, num_classes=10)
    task = Task(logreg((features,), 10), data, NodeData.from_shards(shards), SGD(lr=0.1), seed=0)
    ring = sp.csr_array(nx.to_scipy_sparse_array(nx.cycle_graph(num_nodes)) / 3 + sp.eye(25) / 3)
    backend = LocalBackend()
    backend.start(task, num_nodes, messages=MessageTransforms.of([compressor]))
    backend.params.copy_(torch.randn(num_nodes, 2000, generator=torch.Generator().manual_seed(0)))
    average = backend.params.double().mean(dim=0)
    errors = []
    for round_idx in range(rounds):
        step = Gossip(ring, step_size=gamma, replicas=replicas)
        backend.execute(RoundPlan((step,)), round_idx)
        if (round_idx + 1) % 250 == 0:
            errors.append(float((backend.params.double() - average).square().sum(dim=1).mean()))
    return errors


@pytest.mark.slow
def test_choco_gossip_with_top_1_percent_converges_linearly_where_naive_gossip_stalls():
    """Koloskova et al. 2019, Figure 2's setting (measured: 68, 22, 7.4, 2.6 every 500
    rounds with gamma 0.05; naive compressed gossip, x_i + sum_j w_ij (C(x_j) - C(x_i)),
    224 -> 190; gamma 1 diverges)."""
    choco = ring_consensus(TopK(ratio=0.01), gamma=0.05, replicas=True, rounds=1500)
    ratios = np.array(choco[1:]) / np.array(choco[:-1])
    assert choco[-1] < choco[0] / 10 and (ratios < 0.85).all()  # a geometric decrease
    naive = ring_consensus(TopK(ratio=0.01), gamma=1.0, replicas=False, rounds=1000)
    assert naive[-1] > 0.8 * naive[1] and naive[-1] > 10 * choco[-1]  # stalled
    diverging = ring_consensus(TopK(ratio=0.01), gamma=1.0, replicas=True, rounds=250)
    assert not diverging[-1] < naive[0]
