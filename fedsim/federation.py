"""The world a run simulates, as strategies see it: nodes, graph, data volumes, network, churn."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from fedsim.errors import check

if TYPE_CHECKING:
    from fedsim.simulated.churn import Churn
    from fedsim.simulated.network import Network
    from fedsim.topology.base import Topology

FLOAT_BYTES = 4  # a parameter travels as one float32


@dataclass(frozen=True, eq=False)
class Federation:
    """What a strategy may know about the federation: sizes, topology, data volumes, seed,
    and the simulated world: the ``network``'s time model and the ``churn`` schedule.

    ``topology`` is None for strategies that do not use one (``Strategy.uses_topology``
    false) unless the partition needs it, so it costs nothing to build otherwise.
    ``message_bytes`` is the size of one model message (:func:`message_bytes`), and
    ``link_bytes`` its size on the links where a compressor encodes it; ``batch_size`` the
    local mini-batch and ``momentum`` the local optimizer's.  ``label_histograms`` (n, C)
    counts each node's training examples per class (None where the builder gave none), what
    a server that weighs clients by their label skew learns of them (aggregator=feddisco).
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
    link_bytes: Mapping[str, int] = field(default_factory=dict)
    label_histograms: np.ndarray | None = None

    def bytes_on(self, link: str | None) -> int:
        """The size of one model message on ``link`` (d2d, uplink or downlink)."""
        return self.link_bytes.get(link, self.message_bytes)


def message_bytes(num_parameters: int, header_bytes: int = 0) -> int:
    """The size of one model message: ``num_parameters`` float32 values and the modelled
    per-message header of ``header_bytes``."""
    check(header_bytes >= 0, f"header_bytes={header_bytes} must be >= 0")
    return num_parameters * FLOAT_BYTES + header_bytes
