"""FedFix and asynchronous FedAvg with stochastic aggregation weights (Fraboni et al., JMLR
2023): the schedule and the weights of the official code, FedFix with dt >= max tau_i as
synchronous FedAvg, equal contributions per unit time, bad settings refused."""

import re
from copy import deepcopy

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import compose_config
from helpers import started_backend, whole_and_resumed, zero_logreg_task

from fedsim.build import build_simulation
from fedsim.errors import ConfigError
from fedsim.metrics.recorder import Recorder
from fedsim.plans import Average, RoundPlan
from fedsim.server_optimizers import ServerMomentum
from fedsim.strategies.fedfix import FedFix

# Each client's task is one local step at the seconds per step of its line of the compute
# file, and transfers take no time: tau_i is the file's line i, exactly.
HAND_TIMED = (
    "strategy=fedfix", "strategy.local_epochs=null", "strategy.local_steps=1", "network=file",
    "network.unit=step", "network.latency=constant", "network.latency_file=null",
    "network.latency_s=0", "network.upload_mbps=inf", "network.download_mbps=inf",
)  # fmt: skip


def get_tau_i(n_clients, percent_slower):
    """The official code's ``FL/clients_schedule.py get_tau_i`` for scenario F-X."""
    return np.array([1 - i * percent_slower / 100 / (n_clients - 1) for i in range(n_clients)])


def code_schedule(tau_i, scheme, horizon):
    """The official code's ``clients_time_schedule`` (branch asynchronous_FL), FedFix-dt and
    Async, as written there: per step its time and, per client, the version it trained from
    (-1: it did not return)."""
    n_clients = len(tau_i)
    return_times = deepcopy(tau_i)
    latest_sent_models = np.zeros(n_clients, dtype=int)
    times, schedule = [], []
    if scheme == "Async":
        n = 0
        while np.min(return_times) <= horizon:
            idx_client = np.argmin(return_times)
            times.append(return_times[idx_client])
            return_times[idx_client] = times[-1] + tau_i[idx_client]
            v = -np.ones(n_clients, dtype=int)
            v[idx_client] = latest_sent_models[idx_client]
            schedule.append(v)
            n += 1
            latest_sent_models[idx_client] = n
    else:
        delta_t = float(scheme.split("-")[1])
        for n in range(int(horizon / delta_t)):
            idx_clients = np.where(return_times <= (n + 1) * delta_t)[0]
            return_times[idx_clients] = (n + 1) * delta_t + tau_i[idx_clients]
            v = -np.ones(n_clients, dtype=int)
            v[idx_clients] = latest_sent_models[idx_clients]
            schedule.append(v)
            times.append((n + 1) * delta_t)
            latest_sent_models[idx_clients] = n + 1
    return np.array(times), np.array(schedule)


def hand_timed(tmp_path, tau, *settings):
    """The simulation of ``len(tau)`` clients taking ``tau`` seconds per task."""
    speeds = tmp_path / "speeds.txt"
    speeds.write_text("".join(f"{float(value)!r}\n" for value in tau))
    return build_simulation(
        compose_config(
            f"num_nodes={len(tau)}", *HAND_TIMED, f"network.compute_file={speeds}", *settings
        )
    )


def schedule(simulation, rounds):
    """What fedsim plans (nothing trains): per round its time and, per client, the version it
    trained from (-1: it did not return), and the weight the server gave it."""
    strategy, num_nodes = simulation.strategy, simulation.federation.num_nodes
    started = np.zeros(num_nodes, dtype=int)
    times, versions, weights = [], [], []
    for round_idx in range(rounds):
        version = strategy.version
        plan = strategy.plan(round_idx, simulation.federation)
        row, weight = -np.ones(num_nodes, dtype=int), np.zeros(num_nodes)
        for step in plan.steps:  # in order: the downloads come before the update
            if not (isinstance(step, Average) and step.base):
                continue
            if step.sources.tolist() == [num_nodes]:  # a download
                started[step.targets] = version
            elif step.targets.tolist() == [num_nodes]:  # the update
                row[step.sources] = started[step.sources]
                weight[step.sources] = step.weights
        times.append(plan.finished_at)
        versions.append(row)
        weights.append(weight)
    return np.array(times), np.array(versions), np.array(weights)


@pytest.mark.parametrize("dt", [0.5, 0.3, 0.125])
def test_fedfix_steps_as_the_official_code_on_f80(tmp_path, dt):
    """Scenario F-80, 10 clients: the same clients return at the same steps, from the same
    versions, and steps with nobody returning count (dt = 0.125 < min tau has some)."""
    tau = get_tau_i(10, 80)
    simulation = hand_timed(tmp_path, tau, f"strategy.period={dt}")
    times, versions, _ = schedule(simulation, 80)
    code_times, code_versions = code_schedule(tau, f"FedFix-{dt}", 80 * dt + 1e-9)
    np.testing.assert_array_equal(versions, code_versions[:80])
    np.testing.assert_allclose(times, code_times[:80], rtol=1e-12)
    assert ((versions >= 0).sum(axis=1) == 0).any() == (dt == 0.125)


def test_a_task_that_ends_at_an_aggregation_instant_up_to_rounding_is_in_time(tmp_path):
    """FedFix-0.2 on F-80: the fastest client takes tau = dt = 0.2, so its weight is
    ceil(0.2 / 0.2) p = p and it returns at every step.  The code compares the floats
    (n + 1) 0.2 + 0.2 <= (n + 2) 0.2, false now and then by rounding (12 x 0.2 + 0.2 > 13 x
    0.2), and it then skips a step it is weighted for; fedsim's comparison allows 1e-9 of
    relative slack, so the weights are what the schedule does.  Nothing else differs."""
    tau = get_tau_i(10, 80)
    _, versions, _ = schedule(hand_timed(tmp_path, tau, "strategy.period=0.2"), 60)
    _, code_versions = code_schedule(tau, "FedFix-0.2", 60 * 0.2 + 1e-9)
    assert (versions[:, 9] >= 0).all()  # every step, as its weight assumes
    assert (code_versions[:60, 9] < 0).any()
    differs = np.flatnonzero((versions != code_versions[:60]).any(axis=0))
    assert differs.tolist() == [9]


def test_async_steps_as_the_official_code(tmp_path):
    """One step per return, the earliest first, each client restarting from the version
    its return made (speeds without simultaneous returns before t = 6: at a tie fedsim
    restarts both clients after both updates, the code each after its own)."""
    tau = np.array([1.0, 0.7, 0.45])
    code_times, code_versions = code_schedule(tau, "Async", 6.0)
    simulation = hand_timed(tmp_path, tau, "strategy.period=null")
    times, versions, _ = schedule(simulation, len(code_times))
    np.testing.assert_array_equal(versions, code_versions)
    np.testing.assert_allclose(times, code_times, rtol=1e-12)


F50 = [1.0, 0.5]  # M = 2, scenario F-50


@pytest.mark.parametrize(
    ("period", "weights", "expected"),
    [("0.5", "weight", [1.0, 0.5]), ("null", "weight", [1.5, 0.75]), ("null", "identical", [1, 1])],
)
def test_the_weights_of_m2_f50(tmp_path, period, weights, expected):
    """seed-wave-2.md §2 hand checks: FedFix-0.5 d = ceil(tau / 0.5) / 2 = [1, 0.5];
    Async_weight d = (1 + 2) tau / 2 = [1.5, 0.75]; Async_identical d = 1.  The server
    applies them."""
    simulation = hand_timed(
        tmp_path, F50, f"strategy.period={period}", f"strategy.weights={weights}"
    )
    _, versions, applied = schedule(simulation, 12)
    assert simulation.strategy.d.tolist() == expected
    returned = versions >= 0
    np.testing.assert_array_equal(applied[returned], np.tile(expected, (12, 1))[returned])


@pytest.mark.parametrize(
    ("tau", "period", "rounds"),
    [(F50, "0.5", 20), (F50, "null", 30), (get_tau_i(10, 80), "0.5", 400),
     (get_tau_i(10, 80), "0.2", 1000), (get_tau_i(10, 80), "null", 2000)],
)  # fmt: skip
def test_every_client_contributes_equally_per_unit_time(tmp_path, tau, period, rounds):
    """The weights undo the speeds: sum over steps of d_i 1[i returned], per unit time, is the
    same for every client (p uniform); exactly on M = 2, F-50 up to t = 10 (1.5 per unit
    time with Async_weight, 1 with FedFix-0.5: 0.5 per step); within the tasks still in
    flight at the end on F-80 (Async: 1000 rounds ~ 9 time units)."""
    simulation = hand_timed(tmp_path, tau, f"strategy.period={period}")
    times, versions, weights = schedule(simulation, rounds)
    per_unit_time = weights.sum(axis=0) / times[-1]
    if len(tau) == 2:
        assert times[-1] == 10.0
        assert per_unit_time.tolist() == ([1.0, 1.0] if period == "0.5" else [1.5, 1.5])
    else:  # a client's last task, unfinished at the horizon, is worth at most d_i
        slack = simulation.strategy.d.max() / times[-1]
        assert per_unit_time.max() - per_unit_time.min() <= slack
        assert per_unit_time.max() - per_unit_time.min() < 0.03 * per_unit_time.mean()


def test_async_identical_weighs_clients_by_their_speed(tmp_path):
    """Async_identical: client i contributes 1 / tau_i per unit time (its surrogate
    objective's weights, the code's P_surr), F-80's fastest 5 times the slowest."""
    tau = get_tau_i(10, 80)
    simulation = hand_timed(tmp_path, tau, "strategy.period=null", "strategy.weights=identical")
    times, _, weights = schedule(simulation, 1000)
    share = weights.sum(axis=0) / weights.sum()
    np.testing.assert_allclose(share, simulation.strategy.surrogate(), atol=2e-3)
    np.testing.assert_allclose(simulation.strategy.surrogate(), (1 / tau) / np.sum(1 / tau))


SYNC = (
    "num_nodes=8", "rounds=3", "eval_every=1", "strategy.local_epochs=null",
    "strategy.local_steps=2", "network=heterogeneous", "network.compute_sigma=1.0",
)  # fmt: skip


def recorded(tmp_path, name, *settings):
    simulation = build_simulation(compose_config(*SYNC, *settings))
    plans = [simulation.strategy.plan(r, simulation.federation) for r in range(3)]
    simulation = build_simulation(compose_config(*SYNC, *settings))
    simulation.run(Recorder(tmp_path / f"{name}.parquet"), progress=False)
    rows = pd.read_parquet(tmp_path / f"{name}.parquet").query("node.isna()")
    return simulation, plans, rows.set_index(["round", "metric"]).value


@pytest.mark.parametrize(("period", "importance"), [(1.0, "uniform"), (2.0, "num_examples")])
def test_with_dt_at_least_the_slowest_task_it_is_synchronous_fedavg(tmp_path, period, importance):
    """seed-wave-2.md must-show 1: every client returns at every step with d_i = p_i, so
    each round the same clients train from the same model with the same seeds (a round's
    randomness derives from (seed, round, node)) and the server's model is FedAvg's over
    all clients with weights p_i.  Not bit for bit: FedFix adds the weighted updates to the
    server model, x + sum_i p_i (y_i - x), FedAvg averages the models, sum_i p_i y_i; the
    float32 sums differ in order, hence the tolerance.  The metrics agree, but simulated
    time: FedFix's round lasts dt = period * max tau_i, FedAvg's max tau_i."""
    fedfix, fedfix_plans, ours = recorded(
        tmp_path, "fedfix", "strategy=fedfix", f"strategy.period={period}",
        f"strategy.importance={importance}",
    )  # fmt: skip
    weighting = "uniform" if importance == "uniform" else "num_examples"
    fedavg, fedavg_plans, theirs = recorded(
        tmp_path, "fedavg", "strategy.sample_size=8", f"strategy.weighting={weighting}"
    )
    for mine, other in zip(fedfix_plans, fedavg_plans, strict=True):
        assert mine.steps[1].nodes.tolist() == other.steps[1].nodes.tolist() == list(range(8))
        assert mine.steps[-1].sources.tolist() == other.steps[-1].sources.tolist()
        np.testing.assert_allclose(mine.steps[-1].weights, other.steps[-1].weights, rtol=1e-12)
    server = slice(8, 9)
    torch.testing.assert_close(fedfix.backend.rows(server), fedavg.backend.rows(server),
                               rtol=0, atol=1e-6)  # fmt: skip
    for round_idx in (1, 2, 3):
        for metric in ("accuracy", "loss", "bytes_sent_total"):
            assert ours[(round_idx, metric)] == pytest.approx(
                theirs[(round_idx, metric)], rel=1e-5
            ), metric
        assert ours[(round_idx, "sim_time_s")] == pytest.approx(
            period * theirs[(round_idx, "sim_time_s")], rel=1e-9
        )
    assert ours[(3, "staleness_max")] == 0 and ours[(3, "updates_applied")] == 24


def test_the_server_adds_the_weighted_updates_times_the_server_lr():
    """x + eta_g (d_0 (y_0 - x_0) + d_2 (y_2 - x_2)), each update from its own base."""
    strategy = FedFix(period=None, server_lr=0.5)
    strategy.d = np.array([1.5, 0.0, 0.75])
    step = strategy.server_update(np.array([0, 2]), np.array([0, 3]), np.array([3]))
    assert step.weights.tolist() == [1.5, 0.75] and step.update == ServerMomentum(0.5, 0.0)
    backend = started_backend(zero_logreg_task(), num_rows=4)
    x, y0, y2 = torch.randn(3, backend.params.shape[1], generator=torch.Generator().manual_seed(0))
    base0, base2 = x - 1.0, x + 2.0
    backend.params[3], backend.params[0], backend.params[2] = x, y0, y2
    backend.slot("base")[0], backend.slot("base")[2] = base0, base2
    backend.execute(RoundPlan((step,)), 0)
    expected = x + 0.5 * (1.5 * (y0 - base0) + 0.75 * (y2 - base2))
    torch.testing.assert_close(backend.params[3], expected)


@pytest.mark.parametrize("period", ["0.4", "null"])
def test_a_resumed_run_equals_an_uninterrupted_one(tmp_path, period):
    config = compose_config(
        "num_nodes=6", "rounds=6", "eval_every=2", "checkpoint_every=2", "strategy=fedfix",
        f"strategy.period={period}", "strategy.local_epochs=null", "strategy.local_steps=2",
        "network=heterogeneous", "network.compute_sigma=1.0",
    )  # fmt: skip
    first, second = whole_and_resumed(config, tmp_path, killed_after=2)
    pd.testing.assert_frame_equal(first, second)
    staleness = first.query("metric == 'staleness_max' and node.isna()").value
    assert staleness.iloc[-1] > 0  # clients were in flight across the checkpoint


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (("strategy.period=0",), "strategy.period=0.0 must be > 0 and finite"),
        (("strategy.period=-1",), "strategy.period=-1.0 must be > 0 and finite"),
        (("strategy.period=inf",), "strategy.period=inf must be a finite number"),
        (("strategy.weights=fedfix",), "strategy.weights='fedfix' is not one of: weight, ident"),
        (("strategy.weights=identical",), "strategy.weights=identical needs strategy.period=null"),
        (("strategy.importance=ratio",), "strategy.importance='ratio' is not one of: uniform"),
        (("strategy.server_lr=0",), "strategy.server_lr=0.0 must be > 0"),
        (("strategy.local_steps=2",), "set exactly one of them"),
        (
            ("churn=schedule", "churn.crash_count=1"),
            "churn=schedule needs a strategy that copes with failures",
        ),
        (
            ("network.seconds_per_unit=0", "network.latency_s=0", "network.upload_mbps=inf",
             "network.download_mbps=inf"),
            "strategy=fedfix needs every client's task time > 0 and finite",
        ),
    ],
)  # fmt: skip
def test_bad_settings_are_refused_with_one_config_error(settings, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        build_simulation(compose_config("num_nodes=4", "strategy=fedfix", *settings))
