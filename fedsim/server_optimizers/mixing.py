"""A stateless step towards the received model: ``x <- (1 - alpha) x + alpha x_received``."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fedsim.server_optimizers.base import State


@dataclass(frozen=True)
class Mixing:
    """Moves a row by ``alpha`` of the way to what it received: FedAsync's server mixing a
    client's model in (Xie et al. 2019), a gossip-learning node merging a peer's model with
    age weights (Ormándi et al. 2013)."""

    alpha: float

    def init(self, rows: torch.Tensor) -> State:
        return {}

    def update(
        self, rows: torch.Tensor, average: torch.Tensor, state: State
    ) -> tuple[torch.Tensor, State]:
        return rows + self.alpha * (average - rows), state
