"""The shared bias-versus-exactness problem of the bias-corrected decentralized strategies.

The zoo spec's section 4 runs heterogeneous least squares; fedsim trains cross-entropy
models, so this is its stand-in with the same shape: the three path nodes of
``helpers`` with their different data (so different local optima), full-batch gradients
(batch 4 holds every node's data) and L2 weight decay, which makes the global objective
``(1/3) sum_i f_i(x) + (decay/2) |x|^2`` (f_i node i's mean cross-entropy) strongly convex
with one finite minimiser x*, found here in float64 by Newton's method.
"""

from __future__ import annotations

import torch
from helpers import SHARDS, TRAIN_X, TRAIN_Y, path_federation, started_backend

from fedsim.data.datasets import Dataset
from fedsim.federation import Federation
from fedsim.models import logreg
from fedsim.task import Task
from fedsim.topology import Topology
from fedsim.training.schedule import NodeData
from fedsim.training.sgd import SGD

DECAY = 0.1


def regularised_task(lr: float) -> Task:
    """Logistic regression on the three nodes with weight decay ``DECAY``, full batches."""
    dataset = Dataset("hand", TRAIN_X, TRAIN_Y, TRAIN_X, TRAIN_Y, num_classes=2)
    optimizer = SGD(lr=lr, batch_size=4, weight_decay=DECAY)
    return Task(logreg((2,), 2), dataset, NodeData.from_shards(SHARDS), optimizer, seed=0)


def local_loss(node: int, params: torch.Tensor) -> torch.Tensor:
    """Node ``node``'s mean cross-entropy at ``params`` = [weight (2x2), bias (2)]."""
    x, y = TRAIN_X[SHARDS[node]].double(), TRAIN_Y[SHARDS[node]]
    logits = x @ params[:4].reshape(2, 2).T + params[4:]
    return torch.nn.functional.cross_entropy(logits, y)


def gradients(params: torch.Tensor) -> torch.Tensor:
    """The (3, 6) full local gradients (without the decay) at the rows ``params``, float64."""
    rows = []
    for node in range(3):
        row = params[node].detach().double().requires_grad_()
        rows.append(torch.autograd.grad(local_loss(node, row), row)[0])
    return torch.stack(rows)


def objective(params: torch.Tensor) -> torch.Tensor:
    """The global objective at one model."""
    losses = sum(local_loss(node, params) for node in range(3))
    return losses / 3 + DECAY / 2 * params.square().sum()


def optimum() -> torch.Tensor:
    """x*, by Newton's method in float64."""
    x = torch.zeros(6, dtype=torch.float64)
    for _ in range(30):
        grad = torch.autograd.functional.jacobian(objective, x)
        hessian = torch.autograd.functional.hessian(objective, x)
        x = x - torch.linalg.solve(hessian, grad)
    return x


def distance_after(strategy, rounds: int, lr: float, topology: Topology | None = None) -> float:
    """(1/n) |X - 1 x*^T|_F^2 after ``rounds`` rounds of ``strategy`` from zero (on the
    path with Metropolis-Hastings weights unless ``topology`` is given)."""
    task = regularised_task(lr)
    federation = path_federation(task)
    if topology is not None:
        federation = Federation(3, 0, topology, federation.num_examples)
    backend = started_backend(task, num_rows=3, zero=True)
    for round_idx in range(rounds):
        backend.execute(strategy.plan(round_idx, federation), round_idx)
    return float((backend.params.double() - optimum()).square().sum() / 3)
