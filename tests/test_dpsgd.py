import networkx as nx
import numpy as np
import pytest
import torch
from helpers import (
    TRAIN_X,
    TRAIN_Y,
    hand_gradient,
    path_federation,
    started_backend,
    zero_logreg_task,
)

from fedsim.errors import ConfigError
from fedsim.plans import Gossip, RoundPlan, Train
from fedsim.strategies import DPSGD, Federation
from fedsim.topology import Topology, metropolis_hastings

W = torch.tensor([[2 / 3, 1 / 3, 0], [1 / 3, 1 / 3, 1 / 3], [0, 1 / 3, 2 / 3]])


def test_plan_trains_everyone_then_gossips():
    task = zero_logreg_task()
    federation = path_federation(task)
    train, gossip = DPSGD().plan(0, federation).steps
    assert (
        isinstance(train, Train) and train.nodes.tolist() == [0, 1, 2] and not train.fresh_optimizer
    )
    assert isinstance(gossip, Gossip) and gossip.weights is federation.topology.mixing(0)


def test_gossip_step_is_exactly_w_times_x():
    task = zero_logreg_task()
    backend = started_backend(task, num_rows=3)
    backend.params[:] = torch.tensor([[1.0], [2.0], [4.0]]) * torch.ones(3, 6)
    backend.execute(RoundPlan((Gossip(path_federation(task).topology.mixing(0)),)), round_idx=0)
    torch.testing.assert_close(backend.params[:, 0], torch.tensor([4 / 3, 7 / 3, 10 / 3]))


def test_one_round_by_hand():
    task = zero_logreg_task(lr=0.5)
    federation = path_federation(task)
    backend = started_backend(task, num_rows=3, zero=True)
    backend.execute(DPSGD(local_epochs=1).plan(0, federation), round_idx=0)
    trained = torch.stack([-0.5 * hand_gradient(TRAIN_X[i], int(TRAIN_Y[i])) for i in (0, 1, 2)])
    torch.testing.assert_close(backend.params, W @ trained)


def test_disconnected_graph_is_rejected():
    topology = Topology(nx.Graph([(0, 1), (2, 3)]), metropolis_hastings)
    federation = Federation(4, 0, topology, np.ones(4))
    with pytest.raises(
        ConfigError, match="strategy=dpsgd needs a connected topology.*2 components"
    ):
        DPSGD().validate(federation)
