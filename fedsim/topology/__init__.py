"""Topologies: networkx graphs (static or per round) and the mixing matrices built from them."""

from fedsim.topology.base import Topology, spectral_gap
from fedsim.topology.graphs import (
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
from fedsim.topology.mixing import check_mixing, matrix, max_degree, metropolis_hastings
from fedsim.topology.time_varying import (
    GraphSequence,
    one_peer_exponential,
    random_regular_per_round,
)

__all__ = [
    "GraphSequence", "Topology", "barabasi_albert", "check_mixing", "complete", "components",
    "erdos_renyi", "exponential", "file", "matrix", "max_degree", "metropolis_hastings",
    "one_peer_exponential", "random_regular_per_round", "regular", "require_connected", "ring",
    "small_world", "spectral_gap", "star", "torus",
]  # fmt: skip
