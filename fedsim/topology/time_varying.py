"""Time-varying topologies: a graph per round."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import Protocol

from fedsim import rng
from fedsim.lazy import lazy_module
from fedsim.topology.graphs import regular

nx = lazy_module("networkx")


class GraphAtRound(Protocol):
    def __call__(self, round_idx: int) -> nx.Graph: ...


@dataclass(frozen=True)
class GraphSequence:
    """The graph of each round; ``period`` rounds apart the graphs repeat (None: never)."""

    graph_at: GraphAtRound
    period: int | None = None


def _one_peer_graph(round_idx: int, num_nodes: int) -> nx.DiGraph:
    period = max(1, math.ceil(math.log2(num_nodes)))
    offset = 1 << (round_idx % period)
    graph = nx.DiGraph()
    graph.add_nodes_from(range(num_nodes))
    graph.add_edges_from((i, (i + offset) % num_nodes) for i in range(num_nodes))
    graph.remove_edges_from(nx.selfloop_edges(graph))
    return graph


def one_peer_exponential(num_nodes: int, seed: int) -> GraphSequence:
    """Each round every node i sends to the one peer i + 2^(r mod ceil(log2 n)) (mod n).

    The dynamic one-peer exponential graph of BlueFog, used as the D-PSGD baseline of the
    MoDeST paper: offsets cycle 1, 2, 4, ..., and each node also receives exactly one model.
    """
    period = max(1, math.ceil(math.log2(num_nodes)))
    return GraphSequence(partial(_one_peer_graph, num_nodes=num_nodes), period=period)


def _random_regular_graph(round_idx: int, num_nodes: int, seed: int, degree: int) -> nx.Graph:
    return regular(
        num_nodes, int(rng.generator(seed, rng.TOPOLOGY, round_idx).integers(1 << 31)), degree
    )


def random_regular_per_round(num_nodes: int, seed: int, degree: int = 4) -> GraphSequence:
    """A fresh uniformly random ``degree``-regular graph every round (from seed and round)."""
    regular(num_nodes, seed, degree)  # checks the degree before any round
    return GraphSequence(
        partial(_random_regular_graph, num_nodes=num_nodes, seed=seed, degree=degree)
    )
