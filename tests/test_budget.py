"""Budgets: what stops a run, local steps counted from the plans, the sweep's unit warning."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from conftest import compose_config

from fedsim.budget import Budget, LocalSteps, mixed_units_warning
from fedsim.errors import ConfigError
from fedsim.plans import Gossip, RoundPlan, Train
from fedsim.runner import precheck, run_job

TINY = ["num_nodes=12", "model=logreg", "eval_nodes=4", "progress=false"]


def test_the_first_budget_spent_is_named_in_a_fixed_order():
    budget = Budget(bytes=100.0, sim_time_s=2.0)
    usage = {"rounds": 3, "local_steps": 9.0, "bytes": 99.0, "sim_time_s": 1.0, "wall_time_s": 5}
    assert budget.spent(usage) is None
    assert budget.spent({**usage, "sim_time_s": 2.0}) == "sim_time_s"
    assert budget.spent({**usage, "bytes": 100.0, "sim_time_s": 3.0}) == "bytes"


def test_the_tighter_limit_applies():
    budget = Budget(rounds=10, sim_time_s=5.0).tightened(rounds=20, sim_time_s=2.0, bytes=None)
    assert budget == Budget(rounds=10, sim_time_s=2.0)


@pytest.mark.parametrize("name", ["local_steps", "bytes", "sim_time_s", "wall_time_s"])
def test_a_budget_must_be_positive(name):
    with pytest.raises(ConfigError, match=rf"^budget.{name}=0 must be > 0 \(or null: no limit\)"):
        Budget(**{name: 0})


def test_local_steps_follow_epochs_and_steps_and_skip_nodes_without_data():
    counter = LocalSteps(np.array([10, 0, 25]), batch_size=10)
    gossip = Gossip(weights=sp.csr_array(np.eye(3)))
    counter.account(RoundPlan(steps=(Train(np.array([0, 1, 2]), epochs=2), gossip)))
    assert counter.steps.tolist() == [2, 0, 6]
    counter.account(RoundPlan(steps=(Train(np.array([1, 2]), steps=np.array([4, 3])),)))
    assert counter.steps.tolist() == [2, 0, 9]
    assert counter.metrics() == {"local_steps": 11 / 3, "local_steps_max_node": 9.0}


def test_mixed_units_warn_only_without_a_common_budget_but_rounds():
    fedavg, gossip = ("fedavg", "round", Budget(rounds=30)), ("gossip", "tick", Budget(rounds=30))
    warning = mixed_units_warning([fedavg, gossip])
    assert "round: fedavg; tick: gossip" in warning and "\n" not in warning
    assert mixed_units_warning([fedavg, ("dpsgd", "round", Budget())]) is None
    by_bytes = [(name, unit, Budget(bytes=1e6)) for name, unit, _ in (fedavg, gossip)]
    assert mixed_units_warning(by_bytes) is None
    assert mixed_units_warning([by_bytes[0], gossip]) is not None  # not common to both


def test_a_sweep_mixing_rounds_and_ticks_is_warned_of_before_it_starts(tmp_path, capsys):
    sweep = ["-m", "strategy=fedavg,gossip", "topology=ring", *TINY]
    precheck([*sweep, f"hydra.sweep.dir={tmp_path / 'a'}"])
    assert "round: fedavg; tick: gossip" in capsys.readouterr().err
    precheck([*sweep, "budget.local_steps=10", f"hydra.sweep.dir={tmp_path / 'b'}"])
    assert capsys.readouterr().err == ""


@pytest.mark.slow
def test_a_mixed_sweep_stops_every_run_within_one_round_of_its_byte_budget(tmp_path):
    budget = 1e5  # 2 rounds of FedAvg (10 clients x 2 x 2,600 bytes), ~15 ticks of gossip
    sweep = ["run", "-m", "strategy=fedavg,dpsgd,gossip", *TINY, "topology=ring", "rounds=10000"]
    done = subprocess.run(
        [sys.executable, "-m", "fedsim.cli", *sweep, "eval_every=1", f"budget.bytes={budget}",
         f"hydra.sweep.dir={tmp_path / 'sweep'}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0 and "warning" not in done.stderr, done.stderr[-2000:]
    tmp_path = tmp_path / "sweep"
    units = {}
    for job in ("0", "1", "2"):
        summary = json.loads((tmp_path / job / "summary.json").read_text())
        assert summary["status"] == "completed" and summary["stopped_by"] == "bytes"
        units[summary["choices"]["strategy"]] = summary["round_unit"]
        rows = pd.read_parquet(tmp_path / job / "metrics.parquet")
        sent = rows[rows.metric == "bytes_sent_total"].set_index("round")["value"]
        assert sent.index[-1] == summary["rounds_completed"]
        assert sent.iloc[-2] < budget <= sent.iloc[-1]
        steps = rows[rows.metric == "local_steps"].set_index("round")["value"]
        assert steps.iloc[0] == 0 and steps.is_monotonic_increasing and steps.iloc[-1] > 0
    assert units == {"fedavg": "round", "dpsgd": "round", "gossip": "tick"}


def test_a_local_step_budget_stops_the_run_and_rounds_stop_it_otherwise(tmp_path):
    for name in "abc":
        (tmp_path / name).mkdir()
    # FedAvg trains 10 of 12 nodes a round, an epoch of ceil(~120 / 8) = 15 steps each: 12.5
    stopped = run_job(compose_config(*TINY, "rounds=20", "budget.local_steps=30"), tmp_path / "a")
    assert stopped["stopped_by"] == "local_steps" and stopped["rounds_completed"] == 3
    assert stopped["final"]["local_steps"] == 37.5
    capped = run_job(compose_config(*TINY, "rounds=2", "budget.local_steps=30"), tmp_path / "b")
    assert capped["stopped_by"] == "rounds" and capped["rounds_completed"] == 2
    fewer = run_job(compose_config(*TINY, "rounds=5", "budget.rounds=1"), tmp_path / "c")
    assert fewer["stopped_by"] == "rounds" and fewer["rounds_completed"] == 1
    assert fewer["round_unit"] == "round"
    (tmp_path / "d").mkdir()
    hurried = run_job(compose_config(*TINY, "rounds=5", "budget.wall_time_s=1e-9"), tmp_path / "d")
    # spent by the evaluation at round 0 already: budgets are checked before each round too
    assert hurried["stopped_by"] == "wall_time_s" and hurried["rounds_completed"] == 0


def test_a_run_stopped_by_its_budget_resumes_with_a_larger_one_and_another_logger(tmp_path):
    short = compose_config(*TINY, "rounds=4", "eval_every=1", "budget.rounds=2")
    assert run_job(short, tmp_path)["rounds_completed"] == 2
    longer = compose_config(*TINY, "rounds=4", "eval_every=1", "resume=true", "logger=csv")
    summary = run_job(longer, tmp_path)
    assert summary["rounds_completed"] == 4 and summary["stopped_by"] == "rounds"
    assert pd.read_csv(tmp_path / "metrics.csv")["round"].tolist() == [3, 4]
