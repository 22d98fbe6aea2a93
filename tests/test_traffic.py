"""Traffic counters, by hand: three nodes and a server, messages of 10 bytes."""

import networkx as nx
import numpy as np

from fedsim.plans import Average, Gossip, RoundPlan, Traffic, Train
from fedsim.topology import Topology, metropolis_hastings
from fedsim.traffic import TrafficCounters

PATH = Topology(nx.path_graph(3), metropolis_hastings).mixing(0)  # 0 - 1 - 2


def counters() -> TrafficCounters:
    return TrafficCounters(num_nodes=3, num_rows=4, message_bytes=10)


def test_a_plan_is_counted_from_its_steps():
    traffic = counters()
    upload = Average(np.arange(3), np.array([3]), np.full(3, 1 / 3))
    traffic.account(RoundPlan((Train(np.arange(3), epochs=1), Gossip(PATH), upload)))
    # Gossip: node 1 sends to both neighbours, 0 and 2 to node 1; the upload one each.
    assert traffic.bytes_sent.tolist() == [20, 30, 20, 0]
    assert traffic.aggregations.tolist() == [1, 1, 1, 1]  # each node once, the server once
    assert traffic.bytes_by_channel == {"d2d": 40, "uplink": 30, "downlink": 0}
    metrics = traffic.metrics()
    assert metrics["bytes_sent_total"] == metrics["bytes_model_total"] == 70
    assert (metrics["bytes_sent_max_node"], metrics["aggregations_max_node"]) == (30, 1)
    assert metrics["bytes_control_total"] == 0


def test_a_protocol_that_counts_its_own_traffic_is_taken_at_its_word():
    traffic = counters()
    own = Traffic(np.array([1, 0, 2]), {"views": np.array([5.0, 0, 0])}, np.array([0, 1, 0]))
    traffic.account(RoundPlan((), traffic=own))
    traffic.account(RoundPlan((), traffic=own))
    assert traffic.bytes_sent.tolist() == [20, 0, 40, 0]
    assert traffic.control().tolist() == [10, 0, 0, 0]
    assert traffic.metrics()["bytes_views_total"] == 10
    assert traffic.metrics()["bytes_sent_max_node"] == 40
    assert traffic.bytes_by_channel["d2d"] == 60
    totals = traffic.node_totals()
    assert totals["node"].tolist() == [0, 1, 2]
    assert totals["bytes_control"].tolist() == [10, 0, 0]
    assert totals["aggregations"].tolist() == [0, 2, 0]
    per_node = traffic.node_metrics(np.array([0, 2]))
    assert per_node["node_bytes_model"].tolist() == [20, 40]


def test_the_counters_survive_a_state_round_trip():
    traffic = counters()
    own = Traffic(np.array([1, 0, 2]), {"views": np.array([5.0, 0, 0])}, np.array([0, 1, 0]))
    traffic.account(RoundPlan((), traffic=own))
    state = traffic.state()
    resumed = counters()
    resumed.restore(state)
    traffic.account(RoundPlan((Gossip(PATH),)))
    resumed.account(RoundPlan((Gossip(PATH),)))
    assert resumed.metrics() == traffic.metrics()
    assert state["bytes_sent"].tolist() == [10, 0, 20, 0]  # a copy: later rounds leave it be
