import networkx as nx
import numpy as np
import pytest
import scipy.io
import scipy.sparse as sp

from fedsim.errors import ConfigError
from fedsim.topology import (
    check_mixing,
    complete,
    matrix,
    max_degree,
    metropolis_hastings,
    regular,
    ring,
)


def test_metropolis_hastings_on_a_path_by_hand():
    weights = metropolis_hastings(nx.path_graph(3)).toarray()
    np.testing.assert_allclose(
        weights, [[2 / 3, 1 / 3, 0], [1 / 3, 1 / 3, 1 / 3], [0, 1 / 3, 2 / 3]]
    )


def test_max_degree_on_a_path_by_hand():
    weights = max_degree(nx.path_graph(3)).toarray()
    np.testing.assert_allclose(
        weights, [[2 / 3, 1 / 3, 0], [1 / 3, 1 / 3, 1 / 3], [0, 1 / 3, 2 / 3]]
    )
    star = max_degree(nx.star_graph(3)).toarray()  # max degree 3: every edge weighs 1/4
    np.testing.assert_allclose(star[1], [1 / 4, 3 / 4, 0, 0])


@pytest.mark.parametrize("rule", [metropolis_hastings, max_degree])
@pytest.mark.parametrize(
    "graph", [complete(6, 0), ring(7, 0), regular(10, 1, degree=3), nx.star_graph(5)]
)
def test_rules_are_symmetric_doubly_stochastic_on_the_graph(rule, graph):
    weights = rule(graph)
    check_mixing(weights, "test", doubly_stochastic=True, symmetric=True)
    dense = weights.toarray()
    assert ((dense > 0) == (nx.to_numpy_array(graph) + np.eye(len(dense)) > 0)).all()


def test_directed_one_peer_graph_gets_half_and_half():
    graph = nx.DiGraph([(0, 1), (1, 2), (2, 0)])  # each node sends to its successor
    weights = metropolis_hastings(graph).toarray()
    np.testing.assert_allclose(weights, [[0.5, 0, 0.5], [0.5, 0.5, 0], [0, 0.5, 0.5]])


def test_user_matrix_is_loaded_and_checked(tmp_path):
    good = np.array([[0.5, 0.5, 0], [0.5, 0.25, 0.25], [0, 0.25, 0.75]])
    np.save(tmp_path / "w.npy", good)
    np.savetxt(tmp_path / "w.csv", good, delimiter=",")
    np.savetxt(tmp_path / "w.txt", good, header="W of a path of 3 nodes")
    scipy.io.mmwrite(tmp_path / "w.mtx", sp.coo_array(good))
    for name in ("w.npy", "w.csv", "w.txt", "w.mtx"):
        np.testing.assert_allclose(
            matrix(nx.path_graph(3), path=str(tmp_path / name)).toarray(), good
        )
    np.save(tmp_path / "far.npy", np.array([[0.5, 0, 0.5], [0, 1, 0], [0.5, 0, 0.5]]))
    with pytest.raises(ConfigError, match=r"W\[0, 2\]=0.5 but node 2 does not send to 0"):
        matrix(nx.path_graph(3), path=str(tmp_path / "far.npy"))
    np.save(tmp_path / "rows.npy", np.array([[0.5, 0.4, 0], [0.5, 0.5, 0], [0, 0, 1]]))
    with pytest.raises(ConfigError, match="row 0 sums to 0.9; rows must sum to 1"):
        matrix(nx.path_graph(3), path=str(tmp_path / "rows.npy"))
    with pytest.raises(ConfigError, match=r"expected a 4 x 4 matrix .*found shape \(3, 3\)"):
        matrix(nx.path_graph(4), path=str(tmp_path / "w.npy"))


def test_doubly_stochastic_and_symmetric_requirements():
    row_stochastic = metropolis_hastings(nx.path_graph(3)).tolil()
    row_stochastic[0, 0], row_stochastic[0, 1] = 0.1, 0.9
    with pytest.raises(ConfigError, match="column 0 sums to 0.433333"):
        check_mixing(row_stochastic.tocsr(), "test", doubly_stochastic=True)
    one_peer = metropolis_hastings(nx.DiGraph([(0, 1), (1, 2), (2, 0)]))
    check_mixing(one_peer, "test", doubly_stochastic=True)
    with pytest.raises(ConfigError, match="non-symmetric"):
        check_mixing(one_peer, "test", symmetric=True)
