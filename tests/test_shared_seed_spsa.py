"""Shared-seed SPSA: the estimate on a quadratic, the update by hand, identical replicas,
one scalar per machine-sample per round."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from conftest import compose_config
from helpers import started_backend

from fedsim.build import build_simulation
from fedsim.data.datasets import Dataset
from fedsim.errors import ConfigError
from fedsim.metrics.recorder import Recorder
from fedsim.metrics.reporters import distinct_models
from fedsim.models import logreg
from fedsim.strategies.base import Federation
from fedsim.strategies.shared_seed_spsa import (
    SharedSeedPerturbation,
    SharedSeedSPSA,
    one_byte,
    perturbations,
)
from fedsim.task import Task
from fedsim.traffic import TrafficCounters
from fedsim.training.schedule import NodeData
from fedsim.training.sgd import SGD

TWO_X = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
TWO_Y = torch.tensor([0, 1])


def two_machine_task(lr: float) -> Task:
    """Logistic regression (d = 6), machine 0 holding (x=[1, 0], y=0), machine 1 (x=[0, 2], y=1)."""
    dataset = Dataset("hand", TWO_X, TWO_Y, TWO_X, TWO_Y, num_classes=2)
    shards = [np.array([0]), np.array([1])]
    return Task(logreg((2,), 2), dataset, NodeData.from_shards(shards), SGD(lr=lr), seed=0)


def federation(num_nodes: int, momentum: float = 0.0) -> Federation:
    return Federation(num_nodes, 7, None, np.ones(num_nodes, np.int64), momentum=momentum)


def test_the_estimate_on_a_quadratic_is_the_directional_derivative():
    """(L(t + eps z) - L(t - eps z)) / (2 eps) = grad L(t) . z exactly for L = t'At/2 + b't."""
    generator = torch.Generator().manual_seed(0)
    d, nodes = 5, torch.tensor([3, 8])
    root = torch.randn(d, d, generator=generator, dtype=torch.float64)
    a, b = root @ root.T, torch.randn(d, generator=generator, dtype=torch.float64)
    start = torch.randn(2, d, generator=generator, dtype=torch.float64)

    def loss_at(points: torch.Tensor) -> torch.Tensor:
        return 0.5 * ((points @ a) * points).sum(dim=1) + points @ b

    samples = 3
    transform = SharedSeedPerturbation(epsilon=0.5, samples=samples, seed=7)
    estimate = transform.estimate(start, start, loss_at, nodes, round_idx=4, step=2)
    z = perturbations(7, 4, nodes, 2, d).double()
    directional = ((start @ a + b) * z).sum(dim=1)
    torch.testing.assert_close(estimate, directional[:, None] * z / samples, rtol=1e-12, atol=0)
    # a machine's z depends on (seed, round, machine, sample) alone, not on its chunk
    assert torch.equal(z[1].float(), perturbations(7, 4, nodes[1:], 2, d)[0])
    assert not torch.equal(z[0], z[1])
    assert not torch.equal(z[0].float(), perturbations(7, 4, nodes[:1], 1, d)[0])
    assert abs(float(perturbations(7, 0, torch.arange(200), 0, 50).std()) - 1.0) < 0.02


@pytest.mark.parametrize(("vectorise", "quantize"), [(True, False), (False, False), (True, True)])
def test_one_round_on_two_machines_is_the_update_by_hand(vectorise, quantize):
    """theta' = theta - lr / 2 (p_0 z_0 + p_1 z_1), p_m from machine m's own example (its
    one-byte code's value when quantized)."""
    lr, epsilon = 0.5, 0.1
    task = two_machine_task(lr)
    backend = started_backend(task, num_rows=2, vectorise=vectorise)
    theta = torch.tensor([0.3, -0.2, 0.1, 0.4, -0.5, 0.2])
    backend.params[:] = theta
    strategy = SharedSeedSPSA(epsilon=epsilon, samples=1, quantize=quantize)
    backend.execute(strategy.plan(0, federation(2)), round_idx=0)

    def loss(w: torch.Tensor, machine: int) -> torch.Tensor:
        x, y = TWO_X[machine : machine + 1], TWO_Y[machine : machine + 1]
        return F.cross_entropy(x @ w[:4].view(2, 2).T + w[4:], y)

    update = torch.zeros(6)
    for machine in range(2):
        z = perturbations(7, 0, torch.tensor([machine]), 0, 6)[0]
        p = (loss(theta + epsilon * z, machine) - loss(theta - epsilon * z, machine)) / (
            2 * epsilon
        )
        update += (one_byte(p) if quantize else p) * z
    expected = theta - lr / 2 * update
    torch.testing.assert_close(backend.params[0], expected)
    torch.testing.assert_close(backend.params[1], expected)


def test_replicas_stay_bitwise_identical_and_move():
    lr = 0.5
    task = two_machine_task(lr)
    backend = started_backend(task, num_rows=2)
    start = backend.params[0].clone()
    backend.params[:] = start
    strategy = SharedSeedSPSA(epsilon=1e-2, samples=3)
    for round_idx in range(3):
        backend.execute(strategy.plan(round_idx, federation(2)), round_idx)
        assert torch.equal(backend.params[0], backend.params[1])  # bitwise, every round
    assert not torch.equal(backend.params[0], start)


@pytest.mark.parametrize(("quantize", "scalar_bytes"), [(False, 4), (True, 1)])
def test_bytes_are_one_scalar_per_machine_sample_per_round(quantize, scalar_bytes):
    """Every machine sends its `samples` scalars to each of the other N - 1; no model is sent."""
    num_nodes, samples, rounds = 4, 3, 2
    strategy = SharedSeedSPSA(samples=samples, quantize=quantize)
    counters = TrafficCounters(num_nodes, num_nodes, message_bytes=1000)
    for round_idx in range(rounds):
        counters.account(strategy.plan(round_idx, federation(num_nodes)))
    metrics = counters.metrics()
    expected = rounds * num_nodes * samples * (num_nodes - 1) * scalar_bytes
    assert metrics["bytes_model_total"] == 0
    assert metrics["bytes_projected_gradients_total"] == expected
    assert metrics["bytes_sent_total"] == expected
    assert metrics["bytes_sent_max_node"] == expected / num_nodes


def test_the_one_byte_code_is_logarithmic_and_signed():
    values = torch.tensor([math.exp(3 / 8), -math.exp(-10 / 8), 0.0, 1e6, -1e-9, 1.02])
    decoded = one_byte(values)
    torch.testing.assert_close(decoded[:2], values[:2])  # exactly representable codes
    assert decoded[2] == 0
    torch.testing.assert_close(decoded[3:5], torch.tensor([math.exp(63 / 8), -math.exp(-63 / 8)]))
    assert abs(float(decoded[5] / values[5]) - 1) <= math.exp(1 / 16) - 1
    codes = torch.round(8 * torch.log(decoded[decoded != 0].abs()))
    assert int(codes.abs().max()) <= 63  # sign + 127 magnitudes + zero: 255 codes, one byte


def test_quantized_rounds_keep_replicas_identical_and_move_otherwise():
    task = two_machine_task(0.5)
    rows = []
    for quantize in (False, True):
        backend = started_backend(task, num_rows=2)
        backend.params[1] = backend.params[0]
        backend.execute(SharedSeedSPSA(epsilon=1e-2, quantize=quantize).plan(0, federation(2)), 0)
        assert torch.equal(backend.params[0], backend.params[1])
        rows.append(backend.params[0].clone())
    assert not torch.equal(rows[0], rows[1])


def test_bad_settings_are_one_line_each():
    with pytest.raises(ConfigError, match=r"strategy.epsilon=0 must be > 0"):
        SharedSeedSPSA(epsilon=0)
    with pytest.raises(ConfigError, match=r"strategy.samples=0 must be an integer >= 1"):
        SharedSeedSPSA(samples=0)
    with pytest.raises(ConfigError, match=r"optimizer.momentum=0.9: .* set optimizer.momentum=0"):
        SharedSeedSPSA().validate(federation(2, momentum=0.9))
    compressed = Federation(2, 0, None, np.ones(2, np.int64), link_bytes={"d2d": 10})
    with pytest.raises(ConfigError, match=r"shared_seed_spsa sends .* use compression=none"):
        SharedSeedSPSA().plan(0, compressed)


def test_distinct_models_are_counted_by_their_bits():
    rows = torch.tensor([[1.0, 2.0], [1.0, 2.0], [1.0, 3.0]])
    assert distinct_models(rows) == 2 and distinct_models(rows[:2]) == 1
    rows[1, 0] = torch.nextafter(torch.tensor(1.0), torch.tensor(2.0))  # one bit apart
    assert distinct_models(rows) == 3


def test_every_evaluation_records_that_the_replicas_are_one_model(tmp_path):
    config = compose_config(
        "strategy=shared_seed_spsa", "model=logreg", "num_nodes=4", "rounds=3", "eval_every=1"
    )
    recorder = Recorder(tmp_path / "metrics.parquet")
    build_simulation(config).run(recorder, progress=False)
    recorder.close()
    rows = pd.read_parquet(tmp_path / "metrics.parquet").query("metric == 'replicas_distinct'")
    assert rows["round"].tolist() == [0, 1, 2, 3] and (rows.value == 1).all()
    dpsgd = compose_config("strategy=dpsgd", "num_nodes=4", "rounds=1")
    recorder = Recorder(tmp_path / "dpsgd.parquet")
    build_simulation(dpsgd).run(recorder, progress=False)  # not replicas: not recorded
    recorder.close()
    assert "replicas_distinct" not in set(pd.read_parquet(tmp_path / "dpsgd.parquet").metric)
