"""FedNova: normalised averaging over unequal local work, and per-node local work."""

from dataclasses import replace

import numpy as np
import pytest
import torch
from helpers import path_federation, run_rounds, started_backend, zero_logreg_task

from fedsim.plans import Train
from fedsim.strategies import FedAvg
from fedsim.strategies.fednova import FedNova


def test_equal_local_steps_is_fedavg_bit_for_bit():
    fednova = FedNova(sample_size=3, local_epochs=None, local_steps=2)
    fedavg = FedAvg(sample_size=3, local_epochs=None, local_steps=2)
    assert torch.equal(run_rounds(fednova).params, run_rounds(fedavg).params)


def test_server_step_is_the_normalised_average_by_hand():
    """x <- x - tau_eff sum_i p_i (x - y_i) / tau_i with tau_eff = sum_i p_i tau_i, from the
    clients' trained models y_i (left in their rows) and the work each drew."""
    task = zero_logreg_task(lr=0.5)
    federation = path_federation(task)
    strategy = FedNova(sample_size=3, local_epochs=None, local_steps=1, local_max=4)
    backend = started_backend(task, num_rows=4)
    x = backend.params[3].clone().double()
    plan = strategy.plan(0, federation)
    tau = plan.steps[1].steps.astype(np.float64)
    assert len(set(tau.tolist())) > 1  # seed 0 draws unequal work: the normalised case
    backend.execute(plan, round_idx=0)
    p = np.array([0.25, 0.25, 0.5])  # by examples: node 2 holds two of the four
    y = backend.params[:3].double()
    tau_eff = float(p @ tau)
    expected = x - tau_eff * sum(p[i] * (x - y[i]) / tau[i] for i in range(3))
    torch.testing.assert_close(backend.params[3].double(), expected, rtol=1e-6, atol=1e-6)


def test_momentum_normaliser_sums_the_heavy_ball_step_weights():
    """With momentum rho restarted each round, step k of tau weighs (1 - rho^(tau-k+1)) / (1 -
    rho): for tau = 3, rho = 0.5 that is 1.75 + 1.5 + 1 = 4.25."""
    federation = replace(path_federation(zero_logreg_task()), momentum=0.5)
    strategy = FedNova(sample_size=3, local_epochs=None, local_steps=3)
    assert strategy.step_weights(np.arange(3), 0, federation).tolist() == [4.25] * 3


def test_local_epochs_count_each_clients_batches():
    """In epochs mode tau_i is epochs x batches: batch size 1 gives node 2 (2 examples) twice
    node 0's steps."""
    federation = replace(path_federation(zero_logreg_task()), batch_size=1)
    norms = FedNova(sample_size=3, local_epochs=2).step_weights(np.arange(3), 0, federation)
    assert norms.tolist() == [2.0, 2.0, 4.0]


@pytest.mark.parametrize("vectorise", [True, False])
def test_per_node_steps_equal_training_each_node_alone(vectorise):
    task = zero_logreg_task(lr=0.5)
    together = started_backend(task, num_rows=3, vectorise=vectorise)
    together.train(Train(np.array([2, 0]), steps=np.array([3, 1])), round_idx=0)
    alone = started_backend(task, num_rows=3, vectorise=vectorise)
    alone.train(Train(np.array([2]), steps=3), round_idx=0)
    alone.train(Train(np.array([0]), steps=1), round_idx=0)
    assert torch.equal(together.params, alone.params)


def test_drawn_work_depends_on_seed_and_round_only():
    federation = path_federation(zero_logreg_task())
    strategy = FedNova(sample_size=3, local_epochs=1, local_max=5)
    first = strategy.work(np.arange(3), 7, federation)
    assert np.array_equal(first, strategy.work(np.arange(3), 7, federation))
    assert ((first >= 1) & (first <= 5)).all()


@pytest.mark.parametrize("local_max", [None, 4])
def test_each_client_sends_its_step_norm_beside_its_model(local_max):
    """FedAvg's bytes plus one float32 a_i per sampled client, as control traffic ("side")."""
    from fedsim.traffic import TrafficCounters

    federation = path_federation(zero_logreg_task())
    fednova = FedNova(sample_size=3, local_epochs=None, local_steps=1, local_max=local_max)
    fedavg = FedAvg(sample_size=3, local_epochs=None, local_steps=1)
    counted = {}
    for name, strategy in (("fednova", fednova), ("fedavg", fedavg)):
        counters = TrafficCounters(num_nodes=3, num_rows=4, message_bytes=100)
        counters.account(strategy.plan(0, federation))
        counted[name] = counters.metrics()
    assert counted["fednova"]["bytes_side_total"] == 3 * 4
    assert counted["fednova"]["bytes_model_total"] == counted["fedavg"]["bytes_model_total"]
    assert "bytes_side_total" not in counted["fedavg"]
