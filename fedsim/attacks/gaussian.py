"""Gaussian noise: a Byzantine node sends random noise in place of its message."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from fedsim import rng
from fedsim.attacks.base import Attack
from fedsim.errors import check
from fedsim.messages import Outgoing


class Gaussian(Attack):
    """Send N(0, ``std``^2 I), or the honest message plus that noise (``around_own``): the
    update from the server's model in federated learning, the model itself in gossip.
    Needs nothing of anyone's message (FedML's ``random`` mode is its uniform sibling; the
    spread 200 is the one several papers use).  A sender's noise is a function of
    (seed, round, sender) alone, so it does not change with the other senders of the step.
    """

    def __init__(
        self,
        std: float = 200.0,
        around_own: bool = False,
        fraction: float = 0.2,
        nodes: Sequence[int] | None = None,
    ) -> None:
        check(std >= 0, f"attack.std={std} must be >= 0")
        super().__init__(fraction, nodes)
        self.std, self.around_own = std, around_own

    def forge(
        self, values: torch.Tensor, byzantine: torch.Tensor, outgoing: Outgoing
    ) -> torch.Tensor:
        noise = outgoing.normal(rng.ATTACK, values.shape[1], values.device)[byzantine]
        noise = self.std * noise.to(values.dtype)
        return values[byzantine] + noise if self.around_own else noise
