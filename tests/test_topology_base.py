import networkx as nx
import numpy as np
import pytest

from fedsim.errors import ConfigError
from fedsim.topology import (
    Topology,
    components,
    metropolis_hastings,
    one_peer_exponential,
    random_regular_per_round,
    ring,
    spectral_gap,
)


def test_one_peer_exponential_cycles_offsets_and_sends_one_model():
    sequence = one_peer_exponential(100, 0)
    assert sequence.period == 7
    for round_idx, offset in enumerate([1, 2, 4, 8, 16, 32, 64, 1]):
        graph = sequence.graph_at(round_idx)
        assert all(graph.out_degree(i) == 1 and graph.in_degree(i) == 1 for i in range(100))
        assert graph.has_edge(5, (5 + offset) % 100)


def test_one_peer_mixing_is_doubly_stochastic_and_exact_after_a_period():
    topology = Topology(one_peer_exponential(8, 0), metropolis_hastings)
    topology.require("strategy=dpsgd", connected=True, doubly_stochastic=True)
    np.testing.assert_allclose(topology.mixing(1).toarray()[3], [0, 0.5, 0, 0.5, 0, 0, 0, 0])
    assert topology.mixing(0) is topology.mixing(3)  # cached per position in the period
    product = topology.mixing(2) @ topology.mixing(1) @ topology.mixing(0)
    np.testing.assert_allclose(product.toarray(), np.full((8, 8), 1 / 8))  # n = 2^3: exact average
    summary = topology.summary()
    assert summary["time_varying"] and summary["period"] == 3
    assert summary["spectral_gap_period"] == pytest.approx(1.0)


def test_random_regular_per_round_changes_every_round_and_is_seeded():
    topology = Topology(random_regular_per_round(20, 0, degree=4), metropolis_hastings)
    first, second = topology.graph(0), topology.graph(1)
    assert not nx.utils.graphs_equal(first, second)
    assert nx.utils.graphs_equal(first, random_regular_per_round(20, 0, degree=4).graph_at(0))
    assert all(d == 4 for _, d in second.degree())


def test_spectral_gap_by_hand():
    assert spectral_gap(metropolis_hastings(nx.complete_graph(5))) == pytest.approx(1.0)
    # Ring of 4 with weights 1/3: eigenvalues (1 + 2 cos(2 pi k / 4)) / 3 = 1, 1/3, -1/3, 1/3.
    assert spectral_gap(metropolis_hastings(ring(4, 0))) == pytest.approx(2 / 3)
    assert spectral_gap(metropolis_hastings(components(6, 0))) == pytest.approx(0.0, abs=1e-12)


def test_summary_records_degrees_components_and_gap():
    summary = Topology(
        components(10, 0, num_components=2, kind="complete"), metropolis_hastings
    ).summary()
    assert summary["num_components"] == 2 and summary["num_edges"] == 20
    assert summary["degree_min"] == summary["degree_max"] == 4
    assert summary["spectral_gap"] == pytest.approx(0.0, abs=1e-12)


def test_requirements_are_checked_for_later_rounds_too():
    topology = Topology(components(6, 0), metropolis_hastings, name="topology=components")
    with pytest.raises(
        ConfigError, match="strategy=dpsgd needs a connected topology, but this graph has 2"
    ):
        topology.require("strategy=dpsgd", connected=True)
    assert topology.components() == [[0, 1, 2], [3, 4, 5]]


def test_the_spectral_gap_of_a_graph_beyond_the_limit_is_left_out_of_the_summary(monkeypatch):
    import fedsim.topology.base

    topology = Topology(nx.cycle_graph(12), metropolis_hastings)
    gap = topology.summary()["spectral_gap"]
    assert gap == pytest.approx(1 - (1 + 2 * np.cos(2 * np.pi / 12)) / 3)  # MH on a ring
    monkeypatch.setattr(fedsim.topology.base, "SPECTRAL_GAP_NODES", 11)
    summary = topology.summary()
    assert summary["spectral_gap"] is None and summary["num_edges"] == 12
