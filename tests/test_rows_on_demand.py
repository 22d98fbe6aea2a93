"""Rows on demand (backend.rows=on_demand): a backend holds only the rows a round uses and
the ones the strategy keeps, with exactly the metrics of the full (n, d) tensor."""

import dataclasses

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
from conftest import compose_config
from helpers import smoke_settings, whole_and_resumed
from hydra.utils import instantiate

from fedsim.backends.pool import RowPool, rows_used
from fedsim.build import _memory_estimate, build_simulation, first_plan
from fedsim.config import options
from fedsim.errors import ConfigError, RunError
from fedsim.memory import check_memory
from fedsim.metrics.recorder import Recorder
from fedsim.plans import Average, Gossip, RoundPlan, Train

NODE_METRICS = ("node_accuracy", "consensus_distance", "bytes_sent", "byzantine")


def run(tmp_path, rows: str, *overrides: str):
    """A run with ``backend.rows=rows`` (3 rounds unless told): its simulation and its
    metric rows."""
    config = compose_config("rounds=3", "eval_every=1", f"backend.rows={rows}", *overrides)
    simulation = build_simulation(config)
    path = tmp_path / f"{rows}.parquet"
    recorder = Recorder(path)
    simulation.run(recorder, progress=False)
    recorder.close()
    return simulation, pd.read_parquet(path)


def run_metrics(frame: pd.DataFrame) -> pd.DataFrame:
    """The run-wide metrics, without the wall clock or those of the nodes' own models."""
    kept = frame.node.isna() & ~frame.metric.isin(["wall_time_s", *NODE_METRICS])
    kept &= ~frame.metric.str.startswith("node_accuracy")
    return frame[kept].sort_values(["round", "metric"]).reset_index(drop=True)


def test_fedavg_on_10000_clients_holds_the_cohort_and_records_the_full_layouts_metrics(
    tmp_path,
):
    overrides = ("num_nodes=10000", "data.tile=8", "model=logreg", "strategy.sample_size=20")
    full, full_rows = run(tmp_path, "all", *overrides)
    lean, lean_rows = run(tmp_path, "on_demand", *overrides)
    pd.testing.assert_frame_equal(run_metrics(full_rows), run_metrics(lean_rows))
    assert full.backend.params.shape[0] == 10001
    assert lean.backend.params.shape[0] == 21  # the last cohort and the server
    held = lean.backend.held_nodes()
    assert len(held) == 20  # what the reporter may evaluate: the last round's clients
    assert torch.equal(lean.backend.rows(held), full.backend.rows(held))
    scored = lean_rows.query("metric == 'node_accuracy' and round == 3")
    assert set(scored.node.astype(int)) == set(held.tolist())


@pytest.mark.parametrize("strategy", ["dpsgd", "scaffold", "fedamd"])
def test_a_strategy_whose_nodes_keep_state_keeps_every_row(tmp_path, strategy):
    simulation, _ = run(tmp_path, "on_demand", "num_nodes=12", f"strategy={strategy}")
    assert simulation.strategy.held_nodes() is None
    assert simulation.backend.held_nodes() is None
    assert simulation.backend.params.shape[0] == simulation.num_rows


def stateless_strategies() -> list[str]:
    """The strategy options whose clients hold nothing between rounds."""
    found = []
    for name in options("strategy"):
        settings = (f"strategy={name}", *smoke_settings("strategy", name))
        if instantiate(compose_config(*settings).strategy).held_nodes() is not None:
            found.append(name)
    return found


def test_every_stateless_strategy_records_the_same_run_metrics_on_demand(tmp_path):
    names = stateless_strategies()
    assert {"fedavg", "fedprox", "fednova", "fedadam", "fedbuff", "fedasync"} <= set(names)
    for name in names:
        overrides = ("num_nodes=12", "rounds=2", "eval_every=2", f"strategy={name}")
        overrides += tuple(smoke_settings("strategy", name))
        (full, full_rows), (lean, lean_rows) = (
            run(tmp_path / name / rows, rows, *overrides) for rows in ("all", "on_demand")
        )
        pd.testing.assert_frame_equal(run_metrics(full_rows), run_metrics(lean_rows))
        assert lean.backend.params.shape[0] <= full.backend.params.shape[0], name
        held = lean.backend.held_nodes()
        assert torch.equal(lean.backend.rows(held), full.backend.rows(held)), name


def test_an_asynchronous_server_keeps_the_clients_in_flight(tmp_path):
    simulation, _ = run(tmp_path, "on_demand", "num_nodes=12", "strategy=fedbuff")
    in_flight = simulation.strategy.held_nodes()
    assert 0 < len(in_flight) <= simulation.strategy.concurrency
    assert set(in_flight) <= set(simulation.backend.held_nodes())


def test_a_resumed_run_on_demand_records_what_an_uninterrupted_one_does(tmp_path):
    config = compose_config(
        "num_nodes=12", "rounds=4", "eval_every=1", "checkpoint_every=2", "backend.rows=on_demand"
    )
    whole, resumed = whole_and_resumed(config, tmp_path, killed_after=2)
    pd.testing.assert_frame_equal(whole, resumed)


def test_the_pool_reuses_freed_slots_in_order_and_grows_only_when_it_must():
    pool = RowPool(num_nodes=100, num_servers=1)
    new, slots = pool.admit(np.array([7, 3, 100]))  # the server is always held
    assert new.tolist() == [3, 7] and slots.tolist() == [0, 1] and pool.capacity == 2
    assert pool.physical(np.array([100, 7, 3])).tolist() == [2, 1, 0]
    pool.keep(np.array([7]))
    new, slots = pool.admit(np.array([50, 60]))  # 3 is released, 7 kept
    assert new.tolist() == [50, 60] and slots.tolist() == [0, 2] and pool.capacity == 3
    assert pool.nodes.tolist() == [7, 50, 60]
    pool.keep(np.empty(0))
    new, slots = pool.admit(np.array([1, 2, 4]))
    assert slots.tolist() == [0, 1, 2] and pool.capacity == 3  # an emptied pool: in order
    with pytest.raises(RunError, match="rows \\[7\\] are not held"):
        pool.physical(np.array([7]))


def test_a_plan_that_mixes_every_row_cannot_run_on_demand():
    mix = Gossip(weights=sp.eye_array(3, format="csr"))
    with pytest.raises(RunError, match="Gossip step uses every node's row"):
        rows_used(RoundPlan(steps=(mix,)))
    broadcast = Average(np.array([9]), np.array([4, 2]), np.ones(1))
    plan = RoundPlan(steps=(broadcast, Train(np.array([2, 4]), epochs=1)))
    assert rows_used(plan).tolist() == [2, 4, 9]


def estimate(*overrides: str):
    """The memory estimate that the build checks for a config."""
    config = compose_config(*overrides)
    sim = build_simulation(config)
    plan = first_plan(sim.strategy, sim.federation)
    parts = (sim.strategy, sim.aggregator, None, sim.messages, torch.device("cpu"))
    return _memory_estimate(config, sim.task, sim.federation, plan, *parts)


def test_the_memory_guard_counts_the_cohorts_rows_and_suggests_them():
    overrides = ("num_nodes=1000", "data.tile=2", "strategy.sample_size=10")
    full = estimate(*overrides)
    lean = estimate(*overrides, "backend.rows=on_demand")
    assert full.num_rows == 1001 and lean.num_rows == 11
    assert lean.parameters * 1001 == full.parameters * 11
    assert lean.bookkeeping == full.bookkeeping  # per client, held or not
    tight = dataclasses.replace(full, resident=0, parameters=1 << 50)
    with pytest.raises(ConfigError, match="set backend.rows=on_demand .*11 rows held"):
        check_memory(tight, torch.device("cpu"))
    assert estimate("num_nodes=20", "strategy=dpsgd", "backend.rows=on_demand").num_rows == 20


def test_scoring_every_nodes_own_model_needs_every_row():
    config = compose_config("num_nodes=12", "evaluate=individual", "backend.rows=on_demand")
    with pytest.raises(ConfigError, match="evaluate=individual .* backend.rows=all"):
        build_simulation(config)


def test_an_unknown_rows_setting_is_refused_naming_the_legal_ones():
    with pytest.raises(ConfigError, match="backend.rows='some' is not one of: all, on_demand"):
        build_simulation(compose_config("backend.rows=some"))
