"""FedBuff: buffered asynchronous aggregation of staleness-weighted updates."""

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import compose_config
from helpers import started_backend, zero_logreg_task

from fedsim.build import build_simulation
from fedsim.errors import ConfigError
from fedsim.metrics.recorder import Recorder
from fedsim.plans import Average, RoundPlan
from fedsim.server_optimizers import ServerAdam, ServerMomentum
from fedsim.strategies.fedbuff import FedBuff

EQUAL_SPEEDS = (
    "num_nodes=10", "rounds=3", "eval_every=1", "strategy.local_epochs=null",
    "strategy.local_steps=2", "network.unit=step",
)  # fmt: skip


def run(tmp_path, name, *settings):
    simulation = build_simulation(compose_config(*EQUAL_SPEEDS, *settings))
    plans = [simulation.strategy.plan(r, simulation.federation) for r in range(3)]
    simulation = build_simulation(compose_config(*EQUAL_SPEEDS, *settings))
    simulation.run(Recorder(tmp_path / f"{name}.parquet"), progress=False)
    rows = pd.read_parquet(tmp_path / f"{name}.parquet").query("node.isna()")
    return simulation, plans, rows.set_index(["round", "metric"]).value


def test_with_equal_speeds_k_equal_c_and_no_staleness_weight_it_is_fedavg(tmp_path):
    """async-fl.md, must-show 2: the same clients train from the same models each round, and
    the buffered mean of updates is the uniform average of their models."""
    fedbuff, fedbuff_plans, fedbuff_metrics = run(
        tmp_path, "fedbuff", "strategy=fedbuff", "strategy.concurrency=4",
        "strategy.buffer_size=4", "strategy.staleness=constant",
    )  # fmt: skip
    fedavg, fedavg_plans, fedavg_metrics = run(
        tmp_path, "fedavg", "strategy.sample_size=4", "strategy.weighting=uniform"
    )
    for ours, theirs in zip(fedbuff_plans, fedavg_plans, strict=True):
        assert ours.steps[1].nodes.tolist() == theirs.steps[1].nodes.tolist()
        assert ours.steps[-1].sources.tolist() == theirs.steps[-1].sources.tolist()
    server = slice(10, 11)
    ours, theirs = fedbuff.backend.rows(server), fedavg.backend.rows(server)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)  # float32 rounding apart
    for metric in ("accuracy", "sim_time_s", "bytes_sent_total"):
        for round_idx in (1, 2, 3):
            assert fedbuff_metrics[(round_idx, metric)] == pytest.approx(
                fedavg_metrics[(round_idx, metric)], rel=1e-5
            ), metric
    assert fedbuff_metrics[(3, "staleness_max")] == 0


def test_the_server_adds_each_update_scaled_by_its_staleness_and_divides_by_k():
    """x + (S(0) d0 + S(3) d1) / K with S(s) = 1/sqrt(1 + s) and K = 2: weights 1/2, 1/4."""
    strategy = FedBuff(concurrency=2, buffer_size=2)
    step = strategy.server_update(np.array([0, 2]), np.array([0, 3]), np.array([3]))
    assert step.weights.tolist() == [0.5, 0.25] and step.update is None
    backend = started_backend(zero_logreg_task(), num_rows=4)
    x, y0, y2 = torch.randn(3, backend.params.shape[1], generator=torch.Generator().manual_seed(0))
    base0, base2 = x - 1.0, x + 2.0  # versions the clients downloaded
    backend.params[3], backend.params[0], backend.params[2] = x, y0, y2
    backend.slot("base")[0], backend.slot("base")[2] = base0, base2
    backend.execute(RoundPlan((step,)), 0)
    expected = x + 0.5 * (y0 - base0) + 0.25 * (y2 - base2)
    torch.testing.assert_close(backend.params[3], expected)


def test_a_download_keeps_the_model_each_client_started_from():
    backend = started_backend(zero_logreg_task(), num_rows=4)
    backend.params[3] = 7.0
    download = Average(np.array([3]), np.array([0, 2]), np.ones(1), base="base")
    backend.execute(RoundPlan((download,)), 0)
    assert (backend.slot("base")[[0, 2]] == 7.0).all() and (backend.slot("base")[1] == 0).all()


def test_a_zero_weight_update_is_sent_and_discarded():
    backend = started_backend(zero_logreg_task(), num_rows=4)
    before = backend.params[3].clone()
    step = Average(np.array([1]), np.array([3]), np.zeros(1), base="base")
    backend.execute(RoundPlan((step,)), 0)
    torch.testing.assert_close(backend.params[3], before)
    assert len(step.messages(3).senders) == 1  # its bytes are counted


def test_the_server_optimizer_is_chosen_by_name():
    assert isinstance(FedBuff(server_optimizer="adam", server_lr=0.01).optimizer, ServerAdam)
    momentum = FedBuff(server_lr=0.5, server_momentum=0.9).optimizer
    assert momentum == ServerMomentum(0.5, 0.9)
    with pytest.raises(ConfigError, match="server_optimizer='lamb' is not one of: sgd, adam"):
        FedBuff(server_optimizer="lamb")
    with pytest.raises(ConfigError, match="server_momentum=0.9 applies to server_optimizer=sgd"):
        FedBuff(server_optimizer="adam", server_momentum=0.9)
