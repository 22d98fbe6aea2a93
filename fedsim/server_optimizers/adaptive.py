"""The adaptive server optimizers of FedOpt: FedAdagrad, FedAdam and FedYogi's server steps.

Reddi et al., "Adaptive Federated Optimization", ICLR 2021, Algorithm 2: with the
pseudo-gradient ``delta = average - x``,
``m <- beta1 m + (1 - beta1) delta``, the second moment ``v`` updated as each optimizer
says, and ``x <- x + lr m / (sqrt(v) + tau)`` (elementwise, no bias correction);
``m`` starts at 0 and ``v`` at ``v0`` (the paper's ``v_{-1} >= tau^2``: ``tau^2`` unless
set; Flower starts at 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fedsim.errors import check
from fedsim.server_optimizers.base import State


@dataclass(frozen=True)
class _Adaptive:
    lr: float = 0.01
    beta1: float = 0.9
    beta2: float = 0.99
    tau: float = 1e-3
    v0: float | None = None

    def __post_init__(self) -> None:
        check(self.lr > 0, f"strategy.server_lr={self.lr} must be > 0")
        check(0 <= self.beta1 < 1, f"strategy.beta1={self.beta1} must lie in [0, 1)")
        check(0 <= self.beta2 < 1, f"strategy.beta2={self.beta2} must lie in [0, 1)")
        check(self.tau > 0, f"strategy.tau={self.tau} must be > 0")
        check(self.v0 is None or self.v0 >= 0, f"strategy.v0={self.v0} must be >= 0 or null")

    def init(self, rows: torch.Tensor) -> State:
        v0 = self.tau**2 if self.v0 is None else self.v0
        return {
            "m": torch.zeros_like(rows),
            "v": torch.full_like(rows, v0),
            "step": torch.zeros((), dtype=torch.int64),
        }

    def second_moment(self, v: torch.Tensor, squared: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def update(
        self, rows: torch.Tensor, average: torch.Tensor, state: State
    ) -> tuple[torch.Tensor, State]:
        delta = average - rows
        m = self.beta1 * state["m"] + (1 - self.beta1) * delta
        v = self.second_moment(state["v"], delta.square())
        step = state["step"] + 1
        return rows + self.move(m, v, int(step)), {"m": m, "v": v, "step": step}

    def move(self, m: torch.Tensor, v: torch.Tensor, step: int) -> torch.Tensor:
        return self.lr * m / (v.sqrt() + self.tau)


@dataclass(frozen=True)
class ServerAdagrad(_Adaptive):
    """FedAdagrad: ``v <- v + delta^2``."""

    def second_moment(self, v: torch.Tensor, squared: torch.Tensor) -> torch.Tensor:
        return v + squared


@dataclass(frozen=True)
class ServerAdam(_Adaptive):
    """FedAdam: ``v <- beta2 v + (1 - beta2) delta^2``.  With ``bias_correction``, Kingma
    and Ba's ``m / (1 - beta1^t)`` and ``v / (1 - beta2^t)`` at server step t = 1, 2, ...
    (an option, as Flower's FedAdam corrects; the paper does not)."""

    bias_correction: bool = False

    def second_moment(self, v: torch.Tensor, squared: torch.Tensor) -> torch.Tensor:
        return self.beta2 * v + (1 - self.beta2) * squared

    def move(self, m: torch.Tensor, v: torch.Tensor, step: int) -> torch.Tensor:
        if self.bias_correction:
            m, v = m / (1 - self.beta1**step), v / (1 - self.beta2**step)
        return super().move(m, v, step)


@dataclass(frozen=True)
class ServerYogi(_Adaptive):
    """FedYogi: ``v <- v - (1 - beta2) delta^2 sign(v - delta^2)``."""

    def second_moment(self, v: torch.Tensor, squared: torch.Tensor) -> torch.Tensor:
        return v - (1 - self.beta2) * squared * torch.sign(v - squared)
