"""FedAvgM's server step: SGD with heavy-ball momentum on the pseudo-gradient."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fedsim.errors import check
from fedsim.server_optimizers.base import State


@dataclass(frozen=True)
class ServerMomentum:
    """Hsu, Qi and Brown, "Measuring the Effects of Non-Identical Data Distribution for
    Federated Visual Classification" (2019): with ``g = x - average``, ``u <- beta u + g``
    (``u = g`` in the first round) and ``x <- x - lr u``, as ``torch.optim.SGD``; beta = 0
    and lr = 1 is FedAvg."""

    lr: float = 1.0
    momentum: float = 0.9

    def __post_init__(self) -> None:
        check(self.lr > 0, f"strategy.server_lr={self.lr} must be > 0")
        check(
            0 <= self.momentum < 1,
            f"strategy.server_momentum={self.momentum} must lie in [0, 1)",
        )

    def init(self, rows: torch.Tensor) -> State:
        return {"velocity": torch.zeros_like(rows)}

    def update(
        self, rows: torch.Tensor, average: torch.Tensor, state: State
    ) -> tuple[torch.Tensor, State]:
        velocity = self.momentum * state["velocity"] + (average - rows)  # -u
        return rows + self.lr * velocity, {"velocity": velocity}
