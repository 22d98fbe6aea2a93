"""Sign flipping: a Byzantine node sends its honest message negated and scaled."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from fedsim.attacks.base import Attack
from fedsim.messages import Outgoing


class SignFlip(Attack):
    """Send ``-scale`` times the honest message: the update from the server's model in
    federated learning (the model reflected about the global one, at scale 1), the model
    itself in gossip.  Needs nothing but the sender's own message (the EPFL code's
    ``BitFlippingWorker``; He, Karimireddy and Jaggi, 2022, arXiv 2202.01545)."""

    def __init__(
        self, scale: float = 1.0, fraction: float = 0.2, nodes: Sequence[int] | None = None
    ) -> None:
        super().__init__(fraction, nodes)
        self.scale = scale

    def forge(
        self, values: torch.Tensor, byzantine: torch.Tensor, outgoing: Outgoing
    ) -> torch.Tensor:
        return -self.scale * values[byzantine]
