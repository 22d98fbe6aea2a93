"""One evaluation's report, by hand: three zero logistic-regression models on a path."""

import math
import time

import numpy as np
from helpers import path_federation, started_backend, zero_logreg_task

from fedsim.metrics.recorder import Recorder, read_rows
from fedsim.metrics.reporters import Reporter, evaluated_components, evaluated_nodes
from fedsim.plans import Gossip, RoundPlan
from fedsim.traffic import TrafficCounters


def test_a_report_records_the_models_the_traffic_and_the_nodes(tmp_path):
    task = zero_logreg_task()
    federation = path_federation(task)
    backend = started_backend(task, 3, zero=True)
    traffic = TrafficCounters(3, 3, message_bytes=10)
    traffic.account(RoundPlan((Gossip(federation.topology.mixing(0)),)))
    recorder = Recorder(tmp_path / "metrics.parquet")
    reporter = Reporter(task, federation, eval_nodes=2)
    metrics = reporter.report(
        4, recorder, backend.node_mean(3), backend, traffic, sim_time_s=1.5,
        run_started=time.perf_counter(),
    )  # fmt: skip
    recorder.close()
    # Zero logits: every example is called class 0, one of the four test labels.
    assert (metrics["accuracy"], metrics["node_accuracy_mean"]) == (0.25, 0.25)
    assert math.isclose(metrics["loss"], math.log(2), rel_tol=1e-6)
    assert metrics["sim_time_s"] == 1.5 and metrics["consensus_distance"] == 0
    assert metrics["bytes_sent_total"] == 40 and metrics["wall_time_s"] >= 0
    rows = read_rows(tmp_path / "metrics.parquet").to_pandas()
    assert (rows["round"] == 4).all()
    assert list(rows.metric[rows.node.isna()]) == list(metrics)  # in the order reported
    per_node = rows[rows.metric == "node_bytes_model"]
    assert per_node.node.tolist() == reporter.nodes.tolist()
    assert per_node.value.tolist() == traffic.bytes_sent[reporter.nodes].tolist()


def test_evaluated_nodes_are_all_or_a_seeded_sample():
    federation = path_federation(zero_logreg_task())
    assert evaluated_nodes(federation, 5).tolist() == [0, 1, 2]
    sample = evaluated_nodes(federation, 2)
    assert len(sample) == 2 and np.all(np.diff(sample) > 0)
    assert sample.tolist() == evaluated_nodes(federation, 2).tolist()
    honest = np.array([0, 2])  # node 1 attacks: never evaluated
    assert evaluated_nodes(federation, 5, honest).tolist() == [0, 2]
    assert evaluated_nodes(federation, 1, honest).tolist() in ([0], [2])
    assert evaluated_components(federation, sample) == []  # one component
