"""The FL baseline of the MoDeST paper: MoDeST's sampling with one fixed aggregator."""

from __future__ import annotations

import numpy as np

from fedsim.strategies.base import Federation
from fedsim.strategies.modest.modest import MoDeST


class FixedServerFL(MoDeST):
    """FedAvg as the MoDeST paper ran it (official code, ``--fix-aggregator``): the same
    hash sampling of trainers, but every trained model goes to one fixed peer, the node with
    the lowest median latency to the others, which averages uniformly and sends the result to
    the next sample.  The server is an ordinary node: it can also be sampled as a trainer,
    and if it fails, the federation stalls.
    """

    def server(self, federation: Federation) -> int:
        """The node with the lowest median latency to all nodes (lowest id on ties)."""
        network = federation.network
        nodes = np.arange(federation.num_nodes)
        medians = [np.median(network.latency(np.full_like(nodes, node), nodes)) for node in nodes]
        return int(np.argmin(medians))

    def _aggregators(self, node: int, time: float) -> tuple[list[int], float]:
        if getattr(self, "_server", None) is None:
            self._server = self.server(self.federation)
        return [self._server], time
