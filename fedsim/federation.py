"""The world a run simulates, as strategies see it: nodes, graph, data volumes, network, churn."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from fedsim.topology.base import Topology

if TYPE_CHECKING:
    from fedsim.simulated.churn import Churn
    from fedsim.simulated.network import Network


@dataclass(frozen=True, eq=False)
class Federation:
    """What a strategy may know about the federation: sizes, topology, data volumes, seed,
    and the simulated world: the ``network``'s time model and the ``churn`` schedule.

    ``topology`` is None for strategies that do not use one (``Strategy.uses_topology``
    false) unless the partition needs it, so it costs nothing to build otherwise.
    ``message_bytes`` is the size of one model message, ``batch_size`` the local mini-batch
    and ``momentum`` the local optimizer's.
    """

    num_nodes: int
    seed: int
    topology: Topology | None
    num_examples: np.ndarray
    network: Network | None = None
    churn: Churn | None = None
    message_bytes: int = 0
    batch_size: int = 1
    momentum: float = 0.0
