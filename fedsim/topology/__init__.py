"""Topologies: networkx graphs and the mixing matrices built from them."""

from fedsim.topology.graphs import complete, erdos_renyi, regular, require_connected, ring
from fedsim.topology.mixing import metropolis_hastings

__all__ = ["complete", "erdos_renyi", "metropolis_hastings", "regular", "require_connected", "ring"]
