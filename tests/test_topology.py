import networkx as nx
import numpy as np
import pytest

from fedsim.errors import ConfigError
from fedsim.topology import (
    complete,
    erdos_renyi,
    metropolis_hastings,
    regular,
    require_connected,
    ring,
)


def test_metropolis_hastings_on_a_path_by_hand():
    weights = metropolis_hastings(nx.path_graph(3)).toarray()
    np.testing.assert_allclose(
        weights, [[2 / 3, 1 / 3, 0], [1 / 3, 1 / 3, 1 / 3], [0, 1 / 3, 2 / 3]]
    )


@pytest.mark.parametrize(
    "graph", [complete(6, 0), ring(7, 0), regular(10, 1, degree=3), erdos_renyi(20, 2, p=0.3)]
)
def test_metropolis_hastings_is_symmetric_and_doubly_stochastic(graph):
    weights = metropolis_hastings(graph).toarray()
    np.testing.assert_allclose(weights, weights.T)
    np.testing.assert_allclose(weights.sum(axis=0), 1)
    np.testing.assert_allclose(weights.sum(axis=1), 1)
    assert (weights >= 0).all()
    assert ((weights > 0) == (nx.to_numpy_array(graph) + np.eye(len(weights)) > 0)).all()


def test_builders_give_the_named_graphs():
    assert complete(5, 0).number_of_edges() == 10
    assert sorted(d for _, d in ring(5, 0).degree()) == [2] * 5
    assert {d for _, d in regular(12, 0, degree=5).degree()} == {5}
    assert nx.utils.graphs_equal(regular(12, 3, degree=4), regular(12, 3, degree=4))
    assert nx.utils.graphs_equal(erdos_renyi(30, 3, p=0.2), erdos_renyi(30, 3, p=0.2))


def test_impossible_settings_are_named():
    with pytest.raises(ConfigError, match="topology.degree=3 is impossible with num_nodes=5"):
        regular(5, 0, degree=3)
    with pytest.raises(ConfigError, match=r"topology.p=1.5 must lie in \[0, 1\]"):
        erdos_renyi(5, 0, p=1.5)


def test_connectivity_check():
    require_connected(ring(5, 0), "strategy=dpsgd")
    with pytest.raises(ConfigError, match="needs a connected topology"):
        require_connected(erdos_renyi(10, 0, p=0.0), "strategy=dpsgd")
