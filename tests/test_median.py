"""The coordinate-wise median: an aggregator that combines the received models themselves."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from conftest import compose_config
from helpers import path_federation, started_backend, zero_logreg_task
from test_backend_ray import metrics

from fedsim.aggregators.median import Median
from fedsim.build import build_simulation
from fedsim.errors import ConfigError
from fedsim.plans import Gossip, RoundPlan
from fedsim.strategies import FedAvg


def test_median_of_odd_and_even_counts_by_hand():
    rows, own = torch.tensor([[[1.0, 9.0], [5.0, -1.0], [3.0, 4.0]]]), torch.zeros(1, 2)
    assert Median().combine(rows, torch.ones(1, 3), own).tolist() == [[3.0, 4.0]]
    assert Median().combine(rows[:, :2], torch.ones(1, 2), own).tolist() == [[3.0, 4.0]]  # means


def test_fedavg_server_takes_the_median_of_the_clients():
    task = zero_logreg_task(lr=0.5)
    backend = started_backend(task, num_rows=4)
    backend.start(task, 4, Median())
    broadcast, train, average = FedAvg(sample_size=3).plan(0, path_federation(task)).steps
    backend.execute(RoundPlan((broadcast, train)), round_idx=0)
    clients = backend.params[:3].clone()
    backend.execute(RoundPlan((average,)), round_idx=0)
    torch.testing.assert_close(backend.params[3], clients.median(dim=0).values)


def test_gossip_takes_the_median_over_each_node_and_its_neighbours():
    """Path 0 - 1 - 2: node 1 the median of three models, the ends the mean of two."""
    task = zero_logreg_task()
    backend = started_backend(task, num_rows=3)
    backend.start(task, 3, Median())
    backend.params.copy_(torch.tensor([[0.0] * 6, [1.0] * 6, [5.0] * 6]))
    weights = sp.csr_array(np.array([[2, 1, 0], [1, 1, 1], [0, 1, 2]]) / 3)
    backend.execute(RoundPlan((Gossip(weights),)), round_idx=0)
    assert backend.params[:, 0].tolist() == [0.5, 1.0, 3.0]


def test_a_strategy_that_buffers_refuses_the_median_in_one_line():
    config = compose_config("strategy=gossip", "aggregator=median", "num_nodes=12")
    with pytest.raises(ConfigError, match="aggregator=Median combines .* strategy=EventGossip"):
        build_simulation(config)


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["s2s", "s2a"])
def test_at_semi_decentralized_servers_the_median_holds_where_the_mean_breaks(strategy, tmp_path):
    """One Gaussian attacker (std 200) of 12 nodes, the server acting every round on 8 sampled
    devices: the mean falls far below the attack-free run, the median stays near it."""
    settings = ["num_nodes=12", "rounds=10", "eval_every=10", f"strategy={strategy}",
                "strategy.num_sampled=8", "strategy.server_period=1"]  # fmt: skip
    attacked = ["attack=gaussian", "attack.nodes=[0]"]

    def accuracy(name: str, *overrides: str) -> float:
        rows = metrics(tmp_path, name, *settings, *overrides)
        return rows.query("metric == 'accuracy' and round == 10").value.item()

    clean = accuracy("clean")
    assert accuracy("mean", *attacked) < clean - 0.15
    assert accuracy("median", "aggregator=median", *attacked) > clean - 0.1
