"""Mini-batch SGD hyperparameters and the update rule, applied to stacked rows."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from fedsim.errors import check
from fedsim.training.optimizer import LocalOptimizer, OptimizerState


@dataclass(frozen=True)
class SGD(LocalOptimizer):
    """SGD with optional heavy-ball momentum and L2 weight decay, as ``torch.optim.SGD``.

    With momentum m, gradient g and weight decay w: ``b <- m b + (g + w x)``,
    ``x <- x - lr b`` (no dampening, no Nesterov).  State: ``momentum`` (the buffer b)
    when m > 0, none otherwise.
    """

    lr: float = 0.05
    momentum: float = 0.0
    weight_decay: float = 0.0
    batch_size: int = 16

    torch_keys = {"momentum": "momentum_buffer"}  # noqa: RUF012  (LocalOptimizer's ClassVar)

    def __post_init__(self) -> None:
        check(self.lr > 0, f"optimizer.lr={self.lr} must be > 0")
        check(0 <= self.momentum < 1, f"optimizer.momentum={self.momentum} must lie in [0, 1)")
        check(self.weight_decay >= 0, f"optimizer.weight_decay={self.weight_decay} must be >= 0")
        check(self.batch_size >= 1, f"optimizer.batch_size={self.batch_size} must be >= 1")

    @property
    def state_rows(self) -> int:
        return int(self.momentum > 0)

    @property
    def step_temporaries(self) -> int:
        return int(self.momentum > 0) + int(self.weight_decay > 0)

    def init(self, params: torch.Tensor) -> OptimizerState:
        return {"momentum": torch.zeros_like(params)} if self.momentum else {}

    def step(
        self,
        params: torch.Tensor,
        grads: torch.Tensor,
        state: OptimizerState,
        active: torch.Tensor,
        lr: torch.Tensor,
    ) -> None:
        if self.weight_decay:
            grads = grads + self.weight_decay * params
        momentum = state.get("momentum")
        if momentum is not None:
            updated = self.momentum * momentum + grads
            momentum.copy_(torch.where(active[:, None], updated, momentum))
            grads = momentum
        scale = torch.where(active, -lr, 0.0).to(params.dtype)
        params.addcmul_(grads, scale[:, None])

    def torch_optimizer(self, weights: Sequence[torch.nn.Parameter]) -> torch.optim.Optimizer:
        return torch.optim.SGD(
            weights, lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay
        )
