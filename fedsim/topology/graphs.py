"""Static communication graphs, built by networkx and seeded by the run's seed.

Every builder takes ``num_nodes`` and ``seed`` (plus its own settings) and returns a graph
on the nodes ``0 .. num_nodes - 1``.  An undirected edge is a link both ways; in a
``DiGraph`` an edge ``u -> v`` means u sends its model to v.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

from fedsim import rng
from fedsim.errors import ConfigError, check
from fedsim.files import reading, shorten
from fedsim.lazy import lazy_module

nx = lazy_module("networkx")

_NODE_ID = re.compile(r"-?[0-9]{1,18}")  # longer ids are out of range anyway
_SELF_LOOP = (
    "expected no self-loops, found node {node} linked to itself "
    "(every node keeps its own model; the mixing weights' diagonal says how much)"
)


def complete(num_nodes: int, seed: int) -> nx.Graph:
    """Every node linked to every other."""
    return nx.complete_graph(num_nodes)


def ring(num_nodes: int, seed: int) -> nx.Graph:
    """Node i linked to i - 1 and i + 1 (mod n)."""
    return nx.cycle_graph(num_nodes)


def torus(num_nodes: int, seed: int, rows: int | None = None) -> nx.Graph:
    """A 2-D grid with wrap-around, ``rows`` x (n / rows); by default the squarest one."""
    if rows is None:
        rows = max(r for r in range(1, math.isqrt(num_nodes) + 1) if num_nodes % r == 0)
    check(
        rows >= 1 and num_nodes % rows == 0,
        f"topology.rows={rows} must be a positive divisor of num_nodes={num_nodes}",
    )
    grid = nx.grid_2d_graph(rows, num_nodes // rows, periodic=True)
    return nx.convert_node_labels_to_integers(grid, ordering="sorted")


def regular(num_nodes: int, seed: int, degree: int = 4) -> nx.Graph:
    """A uniformly random ``degree``-regular graph."""
    check(
        0 <= degree < num_nodes and degree * num_nodes % 2 == 0,
        f"topology.degree={degree} is impossible with num_nodes={num_nodes}: "
        "it must be in [0, num_nodes) and degree x num_nodes must be even",
    )
    return nx.random_regular_graph(degree, num_nodes, seed=seed)


def erdos_renyi(num_nodes: int, seed: int, p: float = 0.1, connected: bool = False) -> nx.Graph:
    """Each possible edge present independently with probability ``p`` (G(n, p)); with
    ``connected``, redrawn (from the next seeds, at most 100 draws) until it is connected,
    as the CorN-DSGD code does."""
    check(0 <= p <= 1, f"topology.p={p} must lie in [0, 1]")
    for attempt in range(100 if connected else 1):
        graph = nx.gnp_random_graph(num_nodes, p, seed=seed + attempt)
        if not connected or nx.is_connected(graph):
            return graph
    raise ConfigError(
        f"topology=erdos_renyi with p={p} drew no connected graph of {num_nodes} nodes in 100 "
        "tries; raise topology.p"
    )


def small_world(num_nodes: int, seed: int, degree: int = 4, p: float = 0.1) -> nx.Graph:
    """Watts-Strogatz: a ring lattice of ``degree`` neighbours, edges rewired with chance ``p``."""
    check(
        2 <= degree < num_nodes, f"topology.degree={degree} must lie in [2, num_nodes={num_nodes})"
    )
    check(0 <= p <= 1, f"topology.p={p} must lie in [0, 1]")
    return nx.watts_strogatz_graph(num_nodes, degree, p, seed=seed)


def barabasi_albert(num_nodes: int, seed: int, edges_per_node: int = 2) -> nx.Graph:
    """Preferential attachment: each new node links to ``edges_per_node`` existing ones."""
    check(
        1 <= edges_per_node < num_nodes,
        f"topology.edges_per_node={edges_per_node} must lie in [1, num_nodes={num_nodes})",
    )
    return nx.barabasi_albert_graph(num_nodes, edges_per_node, seed=seed)


def star(num_nodes: int, seed: int) -> nx.Graph:
    """Node 0 linked to every other node."""
    return nx.star_graph(num_nodes - 1)


def exponential(num_nodes: int, seed: int) -> nx.Graph:
    """Node i linked to i +- 2^k (mod n) for every 2^k < n (the static exponential graph)."""
    graph = nx.empty_graph(num_nodes)
    offsets = [1 << k for k in range(max(1, (num_nodes - 1).bit_length()))]
    graph.add_edges_from(
        (i, (i + offset) % num_nodes)
        for i in range(num_nodes)
        for offset in offsets
        if offset < num_nodes and (i + offset) % num_nodes != i
    )
    return graph


def components(
    num_nodes: int,
    seed: int,
    num_components: int = 2,
    kind: str = "ring",
    degree: int = 4,
    p: float = 0.1,
) -> nx.Graph:
    """``num_components`` disconnected blocks of consecutive nodes, each a ``kind`` graph.

    Block sizes differ by at most one.  ``kind`` is any static builder of this module;
    ``degree`` and ``p`` go to the kinds that take them.
    """
    kinds = {
        "complete": complete, "ring": ring, "torus": torus, "regular": regular,
        "erdos_renyi": erdos_renyi, "small_world": small_world, "star": star,
        "exponential": exponential,
    }  # fmt: skip
    check(kind in kinds, f"topology.kind={kind} is not one of: {', '.join(kinds)}")
    check(
        1 <= num_components <= num_nodes,
        f"topology.num_components={num_components} must lie in [1, num_nodes={num_nodes}]",
    )
    graph = nx.Graph()
    start = 0
    for index in range(num_components):
        size = num_nodes // num_components + (index < num_nodes % num_components)
        settings = {"degree": degree} if kind in ("regular", "small_world") else {}
        settings |= {"p": p} if kind in ("erdos_renyi", "small_world") else {}
        block = kinds[kind](size, int(rng.generator(seed, index).integers(1 << 31)), **settings)
        graph.update(nx.relabel_nodes(block, {node: start + node for node in block}))
        start += size
    return graph


def file(num_nodes: int, seed: int, path: str | None = None) -> nx.Graph:
    """A graph a user supplies: an edge list (``u v`` per line) or GraphML (``.graphml``).

    Node labels must be the integers ``0 .. num_nodes - 1``.  In an edge list, each line
    holds exactly two node ids (``#`` starts a comment); a node with no line is isolated.
    Self-loops are refused rather than dropped: every node keeps its own model anyway (the
    mixing weights' diagonal), so one in a file is most likely a mistake in writing it.
    """
    check(path is not None, "topology=file needs topology.path=PATH (an edge list or .graphml)")
    source = Path(path)
    check(source.is_file(), f"topology.path={path} does not exist")
    where = f"topology.path={path}"
    graph = (
        _read_graphml(where, source) if source.suffix == ".graphml" else _read_edges(where, source)
    )
    expected = set(range(num_nodes))
    if not set(graph.nodes) <= expected:
        extra = sorted(set(graph.nodes) - expected)[:3]
        raise ConfigError(
            f"{where} has nodes {extra} outside 0..{num_nodes - 1} (num_nodes={num_nodes})"
        )
    graph.add_nodes_from(expected)  # isolated nodes need no line in an edge list
    return nx.DiGraph(graph) if graph.is_directed() else nx.Graph(graph)


def _read_edges(where: str, source: Path) -> nx.Graph:
    """The undirected graph of an edge list: two integer node ids per line."""
    with reading(where, "an edge list (two integer node ids per line)"):
        text = source.read_text(encoding="utf-8")
    graph = nx.Graph()
    for line_number, line in enumerate(text.split("\n"), start=1):
        ids = line.split("#", 1)[0].split()
        if not ids:
            continue
        check(
            len(ids) == 2 and all(_NODE_ID.fullmatch(node) for node in ids),
            f"{where} line {line_number}: expected two integer node ids, found {shorten(line)}",
        )
        u, v = int(ids[0]), int(ids[1])
        check(u != v, f"{where} line {line_number}: {_SELF_LOOP.format(node=u)}")
        graph.add_edge(u, v)
    return graph


def _read_graphml(where: str, source: Path) -> nx.Graph:
    """A GraphML graph, its node ids turned into integers."""
    with reading(where, "a GraphML file", errors=(nx.NetworkXError,)):
        graph = nx.read_graphml(source)
    names = [name for name in graph if not _NODE_ID.fullmatch(name)]
    if names:
        raise ConfigError(f"{where}: expected integer node ids, found node id {shorten(names[0])}")
    ids = {name: int(name) for name in graph}
    check(
        len(set(ids.values())) == len(ids),
        f"{where}: expected distinct integer node ids, found two spellings of one (e.g. 1, 01)",
    )
    graph = nx.relabel_nodes(graph, ids)
    loop = next(iter(nx.selfloop_edges(graph)), None)
    if loop is not None:
        raise ConfigError(f"{where}: {_SELF_LOOP.format(node=loop[0])}")
    return graph


def require_connected(graph: nx.Graph, needed_by: str) -> None:
    """Raise a :class:`ConfigError` when ``graph`` is not (strongly) connected."""
    if graph.number_of_nodes() == 0:
        return
    if graph.is_directed():
        count = nx.number_strongly_connected_components(graph)
    else:
        count = nx.number_connected_components(graph)
    if count > 1:
        raise ConfigError(
            f"{needed_by} needs a connected topology, but this graph has {count} components; "
            "choose a denser topology (e.g. topology.p or topology.degree higher) or another seed"
        )
