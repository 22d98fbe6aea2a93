"""Inner-product manipulation: Byzantine nodes send the honest mean reversed and shrunk."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from fedsim.attacks.base import Attack
from fedsim.messages import Outgoing


class IPM(Attack):
    """Every Byzantine node sends ``-epsilon`` times the mean of the honest messages of the
    step (the updates from the server's model in federated learning, the models in gossip):
    a small ``epsilon`` keeps the mean's inner product with the honest direction small but
    positive, a large one reverses it.  Omniscient: it reads every honest message of the
    step.  A step with no honest message leaves each Byzantine message as it was computed.
    Xie, Koyejo and Gupta, "Fall of Empires: Breaking Byzantine-tolerant SGD by Inner
    Product Manipulation", UAI 2020 (the EPFL code's ``IPMAttack(epsilon=0.1)``).
    """

    omniscient = True

    def __init__(
        self, epsilon: float = 0.1, fraction: float = 0.2, nodes: Sequence[int] | None = None
    ) -> None:
        super().__init__(fraction, nodes)
        self.epsilon = epsilon

    def forge(
        self, values: torch.Tensor, byzantine: torch.Tensor, outgoing: Outgoing
    ) -> torch.Tensor:
        honest = values[~byzantine]
        if len(honest) == 0:
            return values[byzantine]
        forged = -self.epsilon * honest.mean(dim=0)
        return forged.expand(int(byzantine.sum()), -1).clone()
