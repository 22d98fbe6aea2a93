"""FedProx: the proximal local step, FedAvg at mu = 0, and stragglers' partial work."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import TRAIN_X, TRAIN_Y, path_federation, run_rounds, started_backend, zero_logreg_task

from fedsim.plans import Train
from fedsim.strategies import FedAvg
from fedsim.strategies.fedprox import FedProx, Proximal


def test_mu_zero_is_fedavg_bit_for_bit():
    assert torch.equal(run_rounds(FedProx(mu=0.0, sample_size=2)).params,
                       run_rounds(FedAvg(sample_size=2)).params)  # fmt: skip


@pytest.mark.parametrize("vectorise", [True, False])
def test_local_steps_descend_loss_plus_squared_proximal_term(vectorise):
    """Node 2 takes three full-batch steps on F(w) + mu/2 ||w - w0||^2 (the squared norm, as
    the paper and its PerturbedGradientDescent): the same as autograd on that objective."""
    mu, lr = 0.7, 0.5
    task = zero_logreg_task(lr=lr)
    backend = started_backend(task, num_rows=3, vectorise=vectorise)
    start = backend.params[2].clone()
    backend.train(Train(np.array([2]), steps=3, transforms=(Proximal(mu),)), round_idx=0)

    model = task.model
    w = start.clone()
    for _ in range(3):
        leaf = w.clone().requires_grad_()
        weight, bias = leaf[:4].view(2, 2), leaf[4:]
        x, y = TRAIN_X[2:], TRAIN_Y[2:]
        loss = F.cross_entropy(x @ weight.T + bias, y) + mu / 2 * (leaf - start).square().sum()
        (grad,) = torch.autograd.grad(loss, leaf)
        w = w - lr * grad
    assert [tuple(p.shape) for p in model.parameters()] == [(2, 2), (2,)]  # the row's layout
    torch.testing.assert_close(backend.params[2], w)


def test_stragglers_run_part_of_the_epochs_and_are_still_averaged():
    federation = path_federation(zero_logreg_task())
    strategy = FedProx(sample_size=3, local_epochs=4, drop_percent=0.5)
    _, train, average = strategy.plan(0, federation).steps
    assert sorted(average.sources.tolist()) == [0, 1, 2]  # partial work is aggregated
    epochs = np.asarray(train.epochs)
    assert (epochs == 4).sum() == 2  # round(3 * 0.5) = 2 run all their epochs (round half even)
    assert ((epochs >= 1) & (epochs <= 3)).sum() == 1
    again = strategy.plan(0, federation).steps[1]
    assert np.array_equal(again.epochs, train.epochs)  # drawn from (seed, round), not call order


def test_without_stragglers_the_work_is_one_number():
    train = (
        FedProx(sample_size=3, local_steps=5, local_epochs=None)
        .plan(0, path_federation(zero_logreg_task()))
        .steps[1]
    )
    assert train.steps == 5 and train.epochs is None
