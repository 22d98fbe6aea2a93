import networkx as nx
import pytest

from fedsim.errors import ConfigError
from fedsim.topology import (
    barabasi_albert,
    complete,
    components,
    erdos_renyi,
    exponential,
    file,
    regular,
    require_connected,
    ring,
    small_world,
    star,
    torus,
)


def degrees(graph):
    return sorted(d for _, d in graph.degree())


def test_static_builders_have_their_defining_properties():
    assert complete(5, 0).number_of_edges() == 10
    assert degrees(ring(5, 0)) == [2] * 5
    assert degrees(torus(12, 0)) == [4] * 12 and nx.is_connected(torus(12, 0))
    assert (
        nx.grid_2d_graph(3, 4, periodic=True).number_of_edges()
        == torus(12, 0, rows=3).number_of_edges()
    )
    assert degrees(regular(12, 0, degree=5)) == [5] * 12
    assert degrees(star(6, 0)) == [1] * 5 + [5]
    assert barabasi_albert(30, 0, edges_per_node=2).number_of_edges() == (30 - 2) * 2
    world = small_world(20, 0, degree=4, p=0.0)
    assert nx.utils.graphs_equal(world, nx.watts_strogatz_graph(20, 4, 0.0))


def test_exponential_links_powers_of_two():
    graph = exponential(8, 0)
    assert sorted(graph.neighbors(0)) == [1, 2, 4, 6, 7]
    assert degrees(graph) == [5] * 8


def test_components_are_disconnected_blocks_of_the_chosen_kind():
    graph = components(10, 0, num_components=3, kind="ring")
    blocks = sorted(sorted(c) for c in nx.connected_components(graph))
    assert blocks == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]
    assert all(d == 2 for _, d in graph.degree())
    dense = components(12, 0, num_components=2, kind="regular", degree=3)
    assert nx.number_connected_components(dense) == 2 and degrees(dense) == [3] * 12


def test_random_builders_are_seeded():
    for build in (regular, erdos_renyi, small_world, barabasi_albert):
        assert nx.utils.graphs_equal(build(30, 3), build(30, 3))
        assert not nx.utils.graphs_equal(build(30, 3), build(30, 4))


def test_file_reads_edge_lists_and_graphml(tmp_path):
    (tmp_path / "edges.txt").write_text("0 1\n1 2\n")
    graph = file(4, 0, path=str(tmp_path / "edges.txt"))
    assert sorted(graph.edges()) == [(0, 1), (1, 2)] and 3 in graph
    nx.write_graphml(nx.cycle_graph(5), tmp_path / "ring.graphml")
    assert degrees(file(5, 0, path=str(tmp_path / "ring.graphml"))) == [2] * 5
    # Parallel edges make networkx read a multigraph; fedsim keeps one edge per pair.
    nx.write_graphml(nx.MultiDiGraph([(0, 1), (0, 1), (1, 2)]), tmp_path / "one_way.graphml")
    one_way = file(3, 0, path=str(tmp_path / "one_way.graphml"))
    assert type(one_way) is nx.DiGraph and sorted(one_way.edges()) == [(0, 1), (1, 2)]
    (tmp_path / "far.txt").write_text("0 5\n")
    with pytest.raises(ConfigError, match=r"nodes \[5\] outside 0..4"):
        file(5, 0, path=str(tmp_path / "far.txt"))
    with pytest.raises(ConfigError, match="topology=file needs topology.path"):
        file(5, 0)


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: regular(5, 0, degree=3), "topology.degree=3 is impossible with num_nodes=5"),
        (lambda: erdos_renyi(5, 0, p=1.5), r"topology.p=1.5 must lie in \[0, 1\]"),
        (
            lambda: torus(12, 0, rows=5),
            "topology.rows=5 must be a positive divisor of num_nodes=12",
        ),
        (lambda: components(4, 0, kind="hypercube"), "topology.kind=hypercube is not one of"),
        (lambda: components(4, 0, num_components=5), "topology.num_components=5 must lie in"),
        (lambda: small_world(10, 0, degree=1), "topology.degree=1 must lie in"),
        (lambda: barabasi_albert(5, 0, edges_per_node=5), "topology.edges_per_node=5"),
    ],
)
def test_impossible_settings_are_named(build, message):
    with pytest.raises(ConfigError, match=message):
        build()


def test_connectivity_check():
    require_connected(ring(5, 0), "strategy=dpsgd")
    with pytest.raises(ConfigError, match="needs a connected topology.*10 components"):
        require_connected(erdos_renyi(10, 0, p=0.0), "strategy=dpsgd")
