"""Whole runs in-process: metrics, byte accounting, determinism, vectorised == loop."""

import json

import numpy as np
import pandas as pd
import pytest
from conftest import compose_config
from helpers import smoke_settings

from fedsim.config import options
from fedsim.errors import ConfigError
from fedsim.runner import run_job

AGGREGATES = [
    "sim_time_s",
    "accuracy",
    "loss",
    "node_accuracy_mean",
    "node_accuracy_min",
    "node_accuracy_max",
    "consensus_distance",
    "bytes_sent_total",
    "bytes_sent_max_node",
    "bytes_model_total",
    "bytes_control_total",
    "aggregations_max_node",
    "bytes_d2d_total",
    "bytes_uplink_total",
    "bytes_downlink_total",
    "wall_time_s",
    "local_steps",
    "local_steps_max_node",
]
PER_NODE = ["node_accuracy", "node_bytes_model", "node_bytes_control", "node_aggregations"]


def run(tmp_path, name, *overrides):
    run_dir = tmp_path / name
    run_dir.mkdir()
    summary = run_job(
        compose_config("num_nodes=10", "rounds=4", "eval_every=2", *overrides), run_dir
    )
    return pd.read_parquet(run_dir / "metrics.parquet"), summary


def values(rows, metric):
    return rows[rows.metric == metric].set_index("round")["value"]


def test_metrics_are_tidy_and_complete(tmp_path):
    rows, summary = run(tmp_path, "run")
    assert set(rows.columns) == {"round", "metric", "value", "node"}
    assert set(rows.metric) == {*AGGREGATES, *PER_NODE}
    assert sorted(rows["round"].unique()) == [0, 2, 4]
    per_node = rows[rows.metric == "node_accuracy"]
    assert sorted(per_node.node.unique()) == list(range(10))
    assert rows[~rows.metric.isin(PER_NODE)].node.isna().all()
    assert summary["status"] == "completed" and summary["rounds_completed"] == 4
    saved = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert saved["final"]["accuracy"] == values(rows, "accuracy")[4]


@pytest.mark.parametrize("strategy", options("strategy"))
def test_every_strategy_runs_two_rounds(tmp_path, strategy):
    """Every option of the strategy group, with its YAML's ``# smoke:`` line (none: defaults)."""
    config = compose_config(
        "num_nodes=12", "rounds=2", "eval_every=1", f"strategy={strategy}",
        *smoke_settings("strategy", strategy),
    )  # fmt: skip
    summary = run_job(config, tmp_path)
    assert summary["status"] == "completed" and summary["rounds_completed"] == 2
    rows = pd.read_parquet(tmp_path / "metrics.parquet")
    assert sorted(rows["round"].unique()) == [0, 1, 2]
    assert np.isfinite(values(rows, "loss")).all() and values(rows, "bytes_sent_total")[2] > 0


def test_fedavg_bytes_equal_the_plan(tmp_path):
    rows, summary = run(tmp_path, "run", "strategy.sample_size=3", "header_bytes=16")
    message = summary["num_parameters"] * 4 + 16
    # Each round: the server sends 3 models, 3 clients send one each.
    assert values(rows, "bytes_sent_total").tolist() == [0, 2 * 6 * message, 4 * 6 * message]
    assert values(rows, "bytes_sent_max_node")[4] <= 4 * message
    assert (
        values(rows, "bytes_uplink_total")[4]
        == values(rows, "bytes_downlink_total")[4]
        == 4 * 3 * message
    )
    assert values(rows, "bytes_d2d_total")[4] == 0


def test_dpsgd_bytes_equal_the_plan(tmp_path):
    rows, summary = run(tmp_path, "run", "strategy=dpsgd", "topology=ring")
    message = summary["num_parameters"] * 4
    # On a ring every node sends its model to its 2 neighbours every round.
    assert values(rows, "bytes_sent_total")[4] == 4 * 10 * 2 * message
    assert values(rows, "bytes_sent_max_node")[4] == 4 * 2 * message


def test_dpsgd_reaches_consensus_on_a_complete_graph(tmp_path):
    rows, _ = run(tmp_path, "run", "strategy=dpsgd", "topology=complete")
    # Metropolis-Hastings on a complete graph is the exact average: all nodes agree after mixing.
    assert values(rows, "consensus_distance")[4] < 1e-10
    assert values(rows, "node_accuracy_min")[4] == values(rows, "node_accuracy_max")[4]


@pytest.mark.parametrize("strategy", ["fedavg", "dpsgd"])
def test_same_seed_same_metrics(tmp_path, strategy):
    first, _ = run(tmp_path, "first", f"strategy={strategy}", "seed=3")
    second, _ = run(tmp_path, "second", f"strategy={strategy}", "seed=3")
    other, _ = run(tmp_path, "other", f"strategy={strategy}", "seed=4")
    stable = first.metric != "wall_time_s"
    pd.testing.assert_frame_equal(first[stable], second[stable])
    assert not np.array_equal(values(first, "accuracy"), values(other, "accuracy"))


@pytest.mark.parametrize("strategy", ["fedavg", "dpsgd"])
def test_vectorised_run_equals_loop_run(tmp_path, strategy):
    common = (f"strategy={strategy}", "optimizer.momentum=0.9", "partition=quantity_skew")
    vectorised, _ = run(
        tmp_path, "vectorised", *common, "backend.vectorise=true", "backend.chunk_size=3"
    )
    looped, _ = run(tmp_path, "looped", *common, "backend.vectorise=false")
    for metric in (
        "accuracy",
        "loss",
        "consensus_distance",
        "node_accuracy_mean",
        "bytes_sent_total",
    ):
        np.testing.assert_allclose(
            values(vectorised, metric), values(looped, metric), rtol=1e-4, atol=1e-6
        )


def test_training_learns_digits(tmp_path):
    rows, _ = run(
        tmp_path, "run", "num_nodes=20", "rounds=30", "strategy.sample_size=10", "eval_every=30"
    )
    assert values(rows, "accuracy")[0] < 0.3
    assert values(rows, "accuracy")[30] > 0.7


def test_run_records_label_histograms_and_topology(tmp_path):
    _, summary = run(tmp_path, "run", "strategy=dpsgd", "topology=ring", "partition=shards")
    histograms = pd.read_parquet(tmp_path / "run" / "partition.parquet")
    assert set(histograms.columns) == {"node", "label", "count"}
    assert histograms.groupby("node")["label"].nunique().max() <= 3
    assert summary["topology"]["degree_min"] == summary["topology"]["degree_max"] == 2
    assert 0 < summary["topology"]["spectral_gap"] < 1


def test_fedavg_builds_no_topology(tmp_path):
    _, summary = run(tmp_path, "run", "topology=ring")
    assert summary["topology"] is None


DIVERGING = ["num_nodes=6", "rounds=8", "eval_every=4", "strategy.sample_size=3"]
DIVERGING += ["optimizer.lr=1e30"]


def test_non_finite_parameters_end_the_run_as_diverged_at_that_round(tmp_path):
    with pytest.warns(UserWarning, match="non-finite parameters after round 1"):
        summary = run_job(compose_config(*DIVERGING), tmp_path)
    assert summary["status"] == "diverged" and summary["rounds_completed"] == 1
    rows = pd.read_parquet(tmp_path / "metrics.parquet")
    assert sorted(rows["round"].unique()) == [0, 1]  # the round it happened is recorded


def test_a_diverged_run_may_go_on_to_the_last_round(tmp_path):
    with pytest.warns(UserWarning, match="non-finite parameters after round 1"):
        summary = run_job(compose_config(*DIVERGING, "on_divergence=continue"), tmp_path)
    assert summary["status"] == "diverged" and summary["rounds_completed"] == 8
    assert sorted(pd.read_parquet(tmp_path / "metrics.parquet")["round"].unique()) == [0, 1, 4, 8]


def test_a_healthy_run_is_not_called_diverged(tmp_path):
    summary = run_job(compose_config(*DIVERGING[:-1], "optimizer.lr=0.05"), tmp_path)
    assert summary["status"] == "completed" and "diverged" not in summary


def test_a_time_budget_ends_the_run_after_the_round_that_passes_it(tmp_path):
    rows, summary = run(tmp_path, "budget", "rounds=50", "eval_every=1", "max_sim_time_s=0.5")
    times = values(rows, "sim_time_s")
    assert summary["status"] == "completed" and summary["rounds_completed"] == times.index[-1]
    assert times.iloc[-2] < 0.5 <= times.iloc[-1] and times.index[-1] < 50
    assert summary["stopped_by"] == "sim_time_s"


def test_a_time_budget_must_be_positive(tmp_path):
    with pytest.raises(ConfigError, match=r"max_sim_time_s=0.0 must be > 0 \(or null"):
        run(tmp_path, "zero", "max_sim_time_s=0")


def test_individual_evaluation_scores_the_mean_of_the_nodes_own_models(tmp_path):
    """evaluate=individual: the headline accuracy is node_accuracy_mean (every node
    evaluated here), the averaged model's is kept as global_accuracy."""
    dpsgd = (
        "strategy=dpsgd",
        "topology=regular",
        "topology.degree=3",
        "partition=dirichlet_per_node",
    )
    average, _ = run(tmp_path, "average", *dpsgd)
    individual, _ = run(tmp_path, "individual", *dpsgd, "evaluate=individual")
    pd.testing.assert_series_equal(
        values(individual, "accuracy"), values(individual, "node_accuracy_mean")
    )
    pd.testing.assert_series_equal(
        values(individual, "global_accuracy"), values(average, "accuracy")
    )
    nodes = individual[(individual.metric == "node_accuracy") & (individual["round"] == 4)]
    assert values(individual, "accuracy")[4] == pytest.approx(nodes.value.mean())
    assert (values(individual, "loss") != values(individual, "global_loss")).any()
