"""Communication graphs, built by networkx and seeded by the run's seed."""

from __future__ import annotations

import networkx as nx

from fedsim.errors import ConfigError, check


def complete(num_nodes: int, seed: int) -> nx.Graph:
    """Every node linked to every other."""
    return nx.complete_graph(num_nodes)


def ring(num_nodes: int, seed: int) -> nx.Graph:
    """Node i linked to i - 1 and i + 1 (mod n)."""
    return nx.cycle_graph(num_nodes)


def regular(num_nodes: int, seed: int, degree: int = 4) -> nx.Graph:
    """A uniformly random ``degree``-regular graph."""
    check(
        0 <= degree < num_nodes and degree * num_nodes % 2 == 0,
        f"topology.degree={degree} is impossible with num_nodes={num_nodes}: "
        "it must be in [0, num_nodes) and degree x num_nodes must be even",
    )
    return nx.random_regular_graph(degree, num_nodes, seed=seed)


def erdos_renyi(num_nodes: int, seed: int, p: float = 0.1) -> nx.Graph:
    """Each possible edge present independently with probability ``p`` (G(n, p))."""
    check(0 <= p <= 1, f"topology.p={p} must lie in [0, 1]")
    return nx.gnp_random_graph(num_nodes, p, seed=seed)


def require_connected(graph: nx.Graph, needed_by: str) -> None:
    """Raise a :class:`ConfigError` when ``graph`` is not connected."""
    if graph.number_of_nodes() > 0 and not nx.is_connected(graph):
        components = nx.number_connected_components(graph)
        raise ConfigError(
            f"{needed_by} needs a connected topology, but this graph has {components} components; "
            "choose a denser topology (e.g. topology.p or topology.degree higher) or another seed"
        )
