"""Mini-batch SGD hyperparameters and the update rule, applied to stacked rows."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fedsim.errors import check


@dataclass(frozen=True)
class SGD:
    """SGD with optional heavy-ball momentum and L2 weight decay, as ``torch.optim.SGD``.

    With momentum m, gradient g and weight decay w: ``b <- m b + (g + w x)``,
    ``x <- x - lr b`` (no dampening, no Nesterov).
    """

    lr: float = 0.05
    momentum: float = 0.0
    weight_decay: float = 0.0
    batch_size: int = 16

    def __post_init__(self) -> None:
        check(self.lr > 0, f"optimizer.lr={self.lr} must be > 0")
        check(0 <= self.momentum < 1, f"optimizer.momentum={self.momentum} must lie in [0, 1)")
        check(self.weight_decay >= 0, f"optimizer.weight_decay={self.weight_decay} must be >= 0")
        check(self.batch_size >= 1, f"optimizer.batch_size={self.batch_size} must be >= 1")

    def step(
        self,
        params: torch.Tensor,
        grads: torch.Tensor,
        momentum: torch.Tensor | None,
        active: torch.Tensor,
    ) -> None:
        """Update ``params`` (and ``momentum``) in place, on the rows where ``active`` holds.

        ``params``, ``grads`` and ``momentum`` are (nodes, d); ``active`` is (nodes,) bool.
        """
        if self.weight_decay:
            grads = grads + self.weight_decay * params
        if momentum is not None and self.momentum:
            updated = self.momentum * momentum + grads
            momentum.copy_(torch.where(active[:, None], updated, momentum))
            grads = momentum
        scale = torch.where(active, -self.lr, 0.0).to(params.dtype)
        params.addcmul_(grads, scale[:, None])
