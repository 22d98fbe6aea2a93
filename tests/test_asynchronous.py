"""The asynchronous server's event loop on the simulated clock (FedAsync and FedBuff share it):
who trains when, in which order updates arrive, how stale they are, who is lost."""

import numpy as np
import pandas as pd
import pytest
from conftest import compose_config
from helpers import whole_and_resumed
from scipy import stats

from fedsim.build import build_simulation
from fedsim.federation import Federation
from fedsim.metrics.recorder import Recorder
from fedsim.plans import Average
from fedsim.simulated.churn import Churn
from fedsim.strategies.asynchronous import POPULATION, _drawn_from_population

# Clients 0, 1, 2 take 1, 2 and 4 s per task: 8 steps at 1/8, 1/4 and 1/2 s per step, and
# transfers take no time.
HAND_TIMED = (
    "num_nodes=3", "strategy=fedbuff", "strategy.concurrency=3", "strategy.buffer_size=1",
    "strategy.staleness=polynomial", "strategy.staleness_a=1", "strategy.local_epochs=null",
    "strategy.local_steps=8", "network=file", "network.unit=step", "network.latency=constant",
    "network.latency_file=null", "network.latency_s=0", "network.upload_mbps=inf",
    "network.download_mbps=inf",
)  # fmt: skip


def planned(tmp_path, rounds, *settings):
    """The strategy's plans of ``rounds`` rounds (planning only, nothing trains)."""
    speeds = tmp_path / "speeds.txt"
    speeds.write_text("0.125\n0.25\n0.5\n")
    simulation = build_simulation(
        compose_config(*HAND_TIMED, f"network.compute_file={speeds}", *settings)
    )
    plans = [simulation.strategy.plan(r, simulation.federation) for r in range(rounds)]
    return simulation.strategy, plans


def arrivals(plans):
    """(client, staleness, time) of each round's update: with K = 1 and S(s) = 1/(1 + s)
    its weight gives its staleness."""
    return [
        (int(plan.steps[-1].sources[0]), round(1 / plan.steps[-1].weights[0] - 1), plan.finished_at)
        for plan in plans
    ]


def test_a_hand_timed_run_of_three_clients(tmp_path):
    """All three start at 0 (version 0).  t=1: client 0 arrives fresh (version 1) and starts
    again; t=2: client 0 (fresh, ties go to the lower id) then client 1 (2 versions old); both
    start again at 2 (version 3); t=3: client 0 (fresh) and again; t=4: client 0 (fresh),
    client 1 (started at version 3, now 5: 2 old), client 2 (started at 0, now 6)."""
    strategy, plans = planned(tmp_path, 7)
    assert arrivals(plans) == [
        (0, 0, 1.0), (0, 0, 2.0), (1, 2, 2.0), (0, 0, 3.0), (0, 0, 4.0), (1, 2, 4.0), (2, 6, 4.0)
    ]  # fmt: skip
    started = [plan.steps[0].targets.tolist() if len(plan.steps) > 1 else [] for plan in plans]
    assert started == [[0, 1, 2], [0], [], [0, 1], [0], [], []]
    counters = strategy.counters()
    assert counters["staleness_0"] == 4 and counters["staleness_2"] == 2
    assert counters["staleness_4_7"] == 1 and counters["staleness_max"] == 6
    assert counters["staleness_mean"] == pytest.approx(10 / 7)


def test_a_client_that_goes_offline_mid_task_never_contributes(tmp_path):
    """Client 2 is up until t=3, in the middle of its 4 s task: it does not train, its
    update never arrives, it counts as lost, and it is not sampled again while down."""
    trace = tmp_path / "trace.csv"
    trace.write_text("node,start_s,end_s\n0,0,\n1,0,\n2,0,3\n")
    strategy, plans = planned(tmp_path, 8, "churn=trace", f"churn.path={trace}")
    assert all(client != 2 for client, _, _ in arrivals(plans))
    for plan in plans:
        trained = [step.nodes.tolist() for step in plan.steps if hasattr(step, "nodes")]
        assert all(2 not in nodes for nodes in trained)
    started = [plan.steps[0].targets.tolist() if len(plan.steps) > 1 else [] for plan in plans]
    assert started == [[0, 1, 2], [0], [], [0, 1], [0], [], [0, 1], [0]]  # 2 is down from 3
    assert [client for client, _, _ in arrivals(plans)] == [0, 0, 1, 0, 0, 1, 0, 0]
    counters = strategy.counters()
    assert counters["updates_lost"] == 1 and counters["updates_dropped"] == 1
    assert counters["updates_applied"] == 8


def test_the_run_stops_when_nobody_is_left_to_train(tmp_path):
    trace = tmp_path / "trace.csv"
    trace.write_text("node,start_s,end_s\n0,0,0.5\n1,0,0.5\n2,0,0.5\n")
    _, plans = planned(tmp_path, 1, "churn=trace", f"churn.path={trace}")
    assert "no client can train: 0 of strategy.buffer_size=1 updates arrived" in plans[0].stalled


def test_concurrency_and_max_staleness_hold_under_lognormal_speeds():
    """async-fl.md, must-show 5: never more than C tasks at once; every applied update at
    most max_staleness versions old, older ones received and discarded."""
    simulation = build_simulation(
        compose_config(
            "num_nodes=20",
            "strategy=fedbuff",
            "strategy.concurrency=8",
            "strategy.buffer_size=2",
            "strategy.max_staleness=2",
            "network=heterogeneous",
            "network.compute_sigma=1.5",
        )  # fmt: skip
    )
    strategy = simulation.strategy
    for round_idx in range(40):
        plan = strategy.plan(round_idx, simulation.federation)
        assert len(strategy.tasks) <= 8
        uploads = [step for step in plan.steps if isinstance(step, Average) and step.base]
        *discarded, update = [step for step in uploads if step.targets.tolist() == [20]]
        assert all(step.weights.tolist() == [0.0] for step in discarded)
        assert len(update.sources) == 2 and (update.weights > 0).all()
    counters = strategy.counters()
    assert counters["staleness_max"] <= 2 and counters["updates_applied"] == 80
    assert counters["updates_dropped"] > 0  # some were too stale: the bound was tested


@pytest.mark.parametrize("strategy", ["fedbuff", "fedasync"])
def test_a_resumed_run_equals_an_uninterrupted_one(tmp_path, strategy):
    """The in-flight tasks (client, start version, start and end times) and the clients'
    trained models and downloaded bases survive a checkpoint."""
    config = compose_config(
        "num_nodes=12", "rounds=6", "eval_every=2", "checkpoint_every=2", f"strategy={strategy}",
        "strategy.concurrency=5", "network=heterogeneous",
    )  # fmt: skip
    first, second = whole_and_resumed(config, tmp_path, killed_after=2)
    pd.testing.assert_frame_equal(first, second)
    staleness = first.query("metric == 'staleness_max' and node.isna()").value
    assert staleness.iloc[-1] > 0  # clients were in flight across the checkpoint
    assert np.isfinite(first.value).all()


def population(num_nodes: int, up: np.ndarray) -> Federation:
    """A federation of ``num_nodes`` clients of which only ``up`` are up (no events)."""
    initial = np.zeros(num_nodes, dtype=bool)
    initial[up] = True
    churn = Churn(initial, np.empty(0), np.empty(0, np.int64), np.empty(0, np.int8))
    return Federation(num_nodes, 0, None, np.zeros(0), churn=churn)


def test_a_population_server_draws_up_idle_clients_uniformly_in_time_of_the_draw():
    federation = population(POPULATION * 4, np.arange(0, POPULATION * 4, 2))  # even ids up
    generator, busy = np.random.default_rng(0), [0, 2, 4, 6]
    drawn = [_drawn_from_population(generator, 10, busy, 0.0, federation) for _ in range(2000)]
    assert all(len(set(chosen)) == 10 for chosen in drawn)
    everyone = np.concatenate(drawn)
    assert not (everyone % 2).any() and not np.isin(everyone, busy).any()
    deciles = np.bincount(everyone * 10 // federation.num_nodes, minlength=10)
    assert stats.chisquare(deciles).pvalue > 0.01
    scarce = population(POPULATION * 4, np.arange(5))  # too few up: every node is checked
    assert _drawn_from_population(generator, 10, [], 0.0, scarce) is None


def test_fedbuff_on_a_population_holds_only_its_clients_in_flight(tmp_path):
    config = compose_config(
        f"num_nodes={POPULATION * 3}", "partition=population_iid", "backend.rows=on_demand",
        "strategy=fedbuff", "strategy.concurrency=20", "strategy.buffer_size=5", "rounds=3",
    )  # fmt: skip
    simulation = build_simulation(config)
    recorder = Recorder(tmp_path / "metrics.parquet")
    simulation.run(recorder, progress=False)
    recorder.close()
    in_flight = simulation.strategy.held_nodes()
    assert 0 < len(in_flight) <= 20 and set(in_flight) <= set(simulation.backend.held_nodes())
    assert simulation.backend.params.shape[0] <= 2 * 20 + 1  # in flight, started, the server
