"""Tiny hand-computable federations for strategy and backend tests."""

from __future__ import annotations

import networkx as nx
import numpy as np
import torch

from fedsim.backends.local import LocalBackend
from fedsim.data.datasets import Dataset
from fedsim.models import logreg
from fedsim.strategies.base import Federation
from fedsim.task import Task
from fedsim.topology import Topology, metropolis_hastings
from fedsim.training.schedule import NodeData
from fedsim.training.sgd import SGD

# Three nodes; node 2 holds its example twice, so FedAvg weighs it 2/4.
TRAIN_X = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0], [1.0, 1.0]])
TRAIN_Y = torch.tensor([0, 1, 1, 1])
SHARDS = [np.array([0]), np.array([1]), np.array([2, 3])]


def zero_logreg_task(lr: float = 0.5) -> Task:
    """Logistic regression on the three nodes above (start with ``started_backend(zero=True)``)."""
    model = logreg((2,), 2)
    dataset = Dataset("hand", TRAIN_X, TRAIN_Y, TRAIN_X, TRAIN_Y, num_classes=2)
    return Task(model, dataset, NodeData.from_shards(SHARDS), SGD(lr=lr, batch_size=4), seed=0)


def hand_gradient(x: torch.Tensor, label: int) -> torch.Tensor:
    """Cross-entropy gradient at zero logits over 2 classes, as [weight (2x2), bias (2)]."""
    error = torch.tensor([0.5, 0.5]) - torch.nn.functional.one_hot(torch.tensor(label), 2)
    return torch.cat([torch.outer(error, x).flatten(), error])


def path_federation(task: Task) -> Federation:
    """Nodes 0 - 1 - 2 on a path.

    Metropolis-Hastings weights: [[2/3, 1/3, 0], [1/3, 1/3, 1/3], [0, 1/3, 2/3]].
    """
    return Federation(
        3, 0, Topology(nx.path_graph(3), metropolis_hastings), task.node_data.num_examples
    )


def started_backend(task: Task, num_rows: int, zero: bool = False, **options) -> LocalBackend:
    """A local backend holding ``num_rows`` rows, all zero when ``zero`` (for hand computations)."""
    backend = LocalBackend(**options)
    backend.start(task, num_rows)
    if zero:
        backend.params.zero_()
    return backend
