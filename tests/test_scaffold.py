"""SCAFFOLD: control variates by hand, c as the mean of every c_i, drift removal, bytes."""

from dataclasses import replace

import numpy as np
import pytest
import torch
from helpers import SHARDS, TRAIN_X, TRAIN_Y, path_federation, run_rounds, started_backend

from fedsim import checkpoint
from fedsim.data.datasets import Dataset
from fedsim.errors import ConfigError
from fedsim.models import logreg
from fedsim.plans import RoundPlan
from fedsim.strategies import FedAvg
from fedsim.strategies.scaffold import CONTROL, Scaffold
from fedsim.task import Task
from fedsim.training.schedule import NodeData
from fedsim.training.sgd import SGD

LR, DECAY, K = 0.5, 0.1, 10


def task(lr=LR, weight_decay=DECAY):
    """Logistic regression on the three nodes of helpers.py, full-batch (batch 4)."""
    model = logreg((2,), 2)
    data = Dataset("hand", TRAIN_X, TRAIN_Y, TRAIN_X, TRAIN_Y, num_classes=2)
    optimizer = SGD(lr=lr, weight_decay=weight_decay, batch_size=4)
    return Task(model, data, NodeData.from_shards(SHARDS), optimizer, seed=0)


def run(strategy, rounds):
    return run_rounds(strategy, rounds, task(), zero=True)


def test_first_round_by_hand():
    """c = c_i = 0 at first: the clients train as FedAvg's; then c_i = (x - y_i) / (K lr),
    the server takes the mean of the y_i and c = (1/N) sum_i c_i."""
    scaffold = run(Scaffold(sample_size=3, local_epochs=None, local_steps=K), rounds=1)
    fedavg = run(FedAvg(sample_size=3, local_epochs=None, local_steps=K), rounds=1)
    clients = fedavg.params[:3]
    assert torch.equal(scaffold.params[:3], clients)  # no correction while every c is 0
    torch.testing.assert_close(scaffold.params[3], clients.mean(dim=0))
    control = scaffold.slot(CONTROL)
    torch.testing.assert_close(control[:3], (0 - clients) / (K * LR))  # x = 0
    torch.testing.assert_close(control[3], control[:3].sum(dim=0) / 3)


def test_option_one_keeps_the_gradient_at_the_server_model():
    """Option I: c_i = g_i(x), here full-batch, so the gradient of node i's mean loss at x = 0
    (the weight decay is the optimizer's, outside the correction); c the mean of the c_i."""
    scaffold = run(Scaffold(sample_size=3, local_epochs=None, local_steps=K, option=1), rounds=1)
    control = scaffold.slot(CONTROL)
    for node, shard in enumerate(SHARDS):
        weight = torch.zeros(2, 2, requires_grad=True)
        bias = torch.zeros(2, requires_grad=True)
        loss = torch.nn.functional.cross_entropy(TRAIN_X[shard] @ weight.T + bias, TRAIN_Y[shard])
        loss.backward()
        torch.testing.assert_close(control[node], torch.cat([weight.grad.reshape(-1), bias.grad]))
    torch.testing.assert_close(control[3], control[:3].mean(dim=0))
    option_two = run(Scaffold(sample_size=3, local_epochs=None, local_steps=K), rounds=1)
    torch.testing.assert_close(scaffold.params, option_two.params)  # c = 0 in round 0 either way


def test_server_control_stays_the_mean_of_every_clients_and_newcomers_start_at_zero():
    """Two of three clients a round: c = (1/N) sum over all N of c_i, round after round; a
    client never sampled keeps c_i = 0 (not the model, as Flower's NIID-Bench client)."""
    strategy = Scaffold(sample_size=2, local_epochs=None, local_steps=3)
    backend = run(strategy, rounds=1)
    (never,) = set(range(3)) - set(strategy.sample(0, path_federation(task())).tolist())
    assert not backend.slot(CONTROL)[never].any()
    backend = run(strategy, rounds=5)
    control = backend.slot(CONTROL)
    torch.testing.assert_close(control[3], control[:3].mean(dim=0))


def global_optimum():
    """argmin (1/N) sum_i F_i(w) + decay/2 ||w||^2 (each F_i a node's mean loss), by L-BFGS."""
    w = torch.zeros(6, dtype=torch.float64, requires_grad=True)
    search = torch.optim.LBFGS(
        [w], max_iter=500, tolerance_grad=1e-14, tolerance_change=1e-16,
        line_search_fn="strong_wolfe",
    )  # fmt: skip

    def objective():
        search.zero_grad()
        weight, bias = w[:4].view(2, 2), w[4:]
        losses = [
            torch.nn.functional.cross_entropy(TRAIN_X[s].double() @ weight.T + bias, TRAIN_Y[s])
            for s in SHARDS
        ]
        loss = sum(losses) / len(SHARDS) + DECAY / 2 * w.square().sum()
        loss.backward()
        return loss

    search.step(objective)
    return w.detach()


@pytest.mark.slow
@pytest.mark.parametrize("option", [1, 2])
def test_scaffold_reaches_the_global_optimum_where_fedavg_drifts(option):
    """Heterogeneous clients, full participation, full-batch gradients, K = 10 local steps:
    SCAFFOLD's fixed point is the global minimiser; FedAvg's is biased (Karimireddy et al.)."""
    optimum = global_optimum()
    strategy = Scaffold(sample_size=3, local_epochs=None, local_steps=K, option=option)
    scaffold = run(strategy, rounds=60)
    fedavg = run(
        FedAvg(sample_size=3, local_epochs=None, local_steps=K, weighting="uniform"), rounds=60
    )
    assert (scaffold.params[3].double() - optimum).norm() < 1e-5  # 5e-7 measured
    assert (fedavg.params[3].double() - optimum).norm() > 0.5  # 0.557: stuck, not slow


def test_both_directions_carry_two_model_sized_messages():
    federation = path_federation(task())
    scaffold = Scaffold(sample_size=3).plan(0, federation)
    fedavg = FedAvg(sample_size=3).plan(0, federation)

    def sent(plan):
        return sum(step.messages(3).sent(4) for step in plan.steps)

    assert sent(scaffold).tolist() == (2 * sent(fedavg)).tolist()


def test_control_variates_survive_a_checkpoint(tmp_path):
    strategy = Scaffold(sample_size=2, local_epochs=None, local_steps=3)
    straight = run(strategy, rounds=4)
    first = run(strategy, rounds=2)
    checkpoint.save(tmp_path, {"rounds_completed": 2, "backend": first.state()})
    resumed = started_backend(task(), num_rows=4)
    resumed.restore(checkpoint.load(tmp_path)["backend"])
    federation = path_federation(task())
    for round_idx in (2, 3):
        resumed.execute(strategy.plan(round_idx, federation), round_idx)
    assert torch.equal(resumed.params, straight.params)


@pytest.mark.parametrize("option", [1, 2])
def test_vectorised_and_loop_trainers_correct_alike(option):
    """Round 2 corrects with non-zero c and c_i; the per-node loop gives the same rows."""
    strategy = Scaffold(sample_size=3, local_epochs=None, local_steps=4, option=option)
    the_task = task()
    federation = path_federation(the_task)
    rows = []
    for vectorise in (True, False):
        backend = started_backend(the_task, num_rows=4, zero=True, vectorise=vectorise)
        for round_idx in range(2):
            backend.execute(strategy.plan(round_idx, federation), round_idx)
        rows.append(torch.cat([backend.params, backend.slot(CONTROL)]))
    torch.testing.assert_close(rows[0], rows[1])


def test_momentum_is_refused_in_one_line_with_option_two_only():
    federation = replace(path_federation(task()), momentum=0.9)
    with pytest.raises(ConfigError, match="optimizer.momentum=0.9 must be 0"):
        Scaffold(sample_size=3).validate(federation)
    Scaffold(sample_size=3, option=1).validate(federation)
    with pytest.raises(ConfigError, match="strategy.option=3 is not one of: 1, 2"):
        Scaffold(option=3)


def test_a_plan_step_writes_a_named_slot_not_the_model():
    """The control broadcast leaves the clients' models alone."""
    backend = started_backend(task(), num_rows=4)
    before = backend.params.clone()
    down_c = Scaffold(sample_size=3).plan(0, path_federation(task())).steps[1]
    backend.execute(RoundPlan((down_c,)), round_idx=0)
    assert torch.equal(backend.params, before)
    assert np.array_equal(down_c.targets, [0, 1, 2]) and down_c.written == "server_control"
