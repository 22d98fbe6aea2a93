"""FedAvg on the simulated clock: waiting for every client, over-selection and a deadline."""

import numpy as np
import pandas as pd
import pytest
from conftest import compose_config
from helpers import whole_and_resumed

from fedsim.build import build_simulation
from fedsim.errors import ConfigError
from fedsim.metrics.recorder import Recorder

# 13 clients of 50, 10, 120, ... ms per sample and a fast link: 10 steps of 5 examples take
# 3 x 50 x computation / 1000 s to compute, plus a few microseconds of transfer.
SPEEDS = [50, 10, 120, 30, 80, 20, 200, 60, 40, 90, 70, 150, 100]


def run(tmp_path, *settings, rounds=1, name="run"):
    profile = tmp_path / "devices.csv"
    profile.write_text("computation,communication\n" + "".join(f"{ms},1e9\n" for ms in SPEEDS))
    config = compose_config(
        "num_nodes=13", f"rounds={rounds}", "eval_every=1", "strategy.sample_size=10",
        "strategy.local_epochs=null", "strategy.local_steps=10", "optimizer.batch_size=5",
        "network=device_profiles", f"network.path={profile}", *settings,
    )  # fmt: skip
    simulation = build_simulation(config)
    simulation.run(Recorder(tmp_path / f"{name}.parquet"), progress=False)
    rows = pd.read_parquet(tmp_path / f"{name}.parquet")
    return simulation, rows.query("node.isna()").set_index(["round", "metric"]).value


def test_over_selection_keeps_exactly_the_k_fastest_and_ends_at_the_kth(tmp_path):
    """async-fl.md, "what fedsim must be able to show" 4: floor(1.3 x 10) = 13 sampled (all of
    them), the 10 fastest kept; the round ends when the 10th fastest is done: 0.15 x 100 s."""
    simulation, metrics = run(tmp_path, "strategy.over_selection=1.3")
    plan = simulation.strategy.plan(1, simulation.federation)
    trained = plan.steps[1].nodes
    fastest = np.sort(np.argsort(SPEEDS)[:10])
    assert plan.steps[0].targets.tolist() == list(range(13))  # all 13 download
    assert trained.tolist() == fastest.tolist()
    assert metrics[(1, "sim_time_s")] == pytest.approx(3 * 50 * 100 / 1000, rel=1e-4)
    assert metrics[(1, "updates_applied")] == 10 and metrics[(1, "updates_dropped")] == 3


def test_without_over_selection_the_round_waits_for_the_slowest_sampled(tmp_path):
    simulation, metrics = run(tmp_path)
    sampled = simulation.strategy.plan(0, simulation.federation).steps[1].nodes
    slowest = max(SPEEDS[node] for node in sampled)
    assert metrics[(1, "sim_time_s")] == pytest.approx(3 * 50 * slowest / 1000, rel=1e-4)
    assert (1, "updates_dropped") not in metrics  # nothing is dropped, nothing counted


def test_a_deadline_keeps_only_who_finishes_in_time_and_counts_the_rest(tmp_path):
    """Deadline 9.5 s: of the 10 sampled, computation <= 60 ms (9 s of compute, microseconds
    of transfer) makes it."""
    simulation, metrics = run(tmp_path, "strategy.deadline_s=9.5", rounds=2)
    for round_idx in (0, 1):
        plan = simulation.strategy.plan(round_idx, simulation.federation)
        sampled, trained = plan.steps[0].targets, plan.steps[1].nodes
        assert trained.tolist() == [node for node in sampled if SPEEDS[node] <= 60]
    applied, dropped = metrics[(2, "updates_applied")], metrics[(2, "updates_dropped")]
    assert applied + dropped == 20 and 0 < dropped < 20


def test_when_nobody_makes_the_deadline_the_global_model_stays(tmp_path):
    simulation, metrics = run(tmp_path, "strategy.deadline_s=0.1")
    assert metrics[(1, "updates_applied")] == 0 and metrics[(1, "updates_dropped")] == 10
    assert metrics[(1, "accuracy")] == metrics[(0, "accuracy")]


def test_a_resumed_run_keeps_its_counts(tmp_path):
    settings = ("strategy.over_selection=1.3", "checkpoint_every=1")
    profile = tmp_path / "devices.csv"
    profile.write_text("computation,communication\n" + "".join(f"{ms},1e9\n" for ms in SPEEDS))
    config = compose_config(
        "num_nodes=13", "rounds=3", "eval_every=2", "strategy.sample_size=10",
        "network=device_profiles", f"network.path={profile}", *settings,
    )  # fmt: skip
    first, second = whole_and_resumed(config, tmp_path, killed_after=1)
    pd.testing.assert_frame_equal(first, second)
    assert first.query("metric == 'updates_applied'").value.tolist() == [0.0, 20.0, 30.0]


@pytest.mark.parametrize(
    "setting, message",
    [
        ("strategy.over_selection=0.5", "strategy.over_selection=0.5 must be a finite number >= 1"),
        ("strategy.deadline_s=0", r"strategy.deadline_s=0(.0)? must be a finite number > 0"),
        ("strategy.over_selection=2.0", "samples 20 clients, more than num_nodes=13"),
    ],
)
def test_bad_straggler_settings_are_refused_in_one_line(setting, message):
    with pytest.raises(ConfigError, match=message):
        build_simulation(compose_config("num_nodes=13", "strategy.sample_size=10", setting))
