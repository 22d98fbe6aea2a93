"""Adam and AdamW as local optimizers, applied to stacked rows as ``torch.optim`` does."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch

from fedsim.errors import check
from fedsim.training.optimizer import LocalOptimizer, OptimizerState


@dataclass(frozen=True)
class Adam(LocalOptimizer):
    """Adam (Kingma & Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015), step for
    step ``torch.optim.Adam`` (no amsgrad): with gradient g (plus ``weight_decay x``, L2),

    ``m <- b1 m + (1 - b1) g``, ``v <- b2 v + (1 - b2) g^2``,
    ``x <- x - lr / (1 - b1^k) m / (sqrt(v) / sqrt(1 - b2^k) + eps)``

    at a row's k-th step since its state was last reset.  State: ``exp_avg`` (m),
    ``exp_avg_sq`` (v) and the per-row step count ``step`` (k), reset together by
    ``fresh_optimizer``, so that bias correction restarts at k = 1.
    """

    lr: float = 0.001
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    batch_size: int = 16

    decoupled: ClassVar[bool] = False  # AdamW: weight decay shrinks x, apart from g
    torch_keys = {"exp_avg": "exp_avg", "exp_avg_sq": "exp_avg_sq", "step": "step"}  # noqa: RUF012

    def __post_init__(self) -> None:
        betas = tuple(self.betas)  # Hydra passes a list
        check(
            len(betas) == 2 and all(0 <= beta < 1 for beta in betas),
            f"optimizer.betas={list(betas)} must be two numbers in [0, 1)",
        )
        object.__setattr__(self, "betas", (float(betas[0]), float(betas[1])))
        check(self.lr > 0, f"optimizer.lr={self.lr} must be > 0")
        check(self.eps > 0, f"optimizer.eps={self.eps} must be > 0")
        check(self.weight_decay >= 0, f"optimizer.weight_decay={self.weight_decay} must be >= 0")
        check(self.batch_size >= 1, f"optimizer.batch_size={self.batch_size} must be >= 1")

    @property
    def state_rows(self) -> int:
        return 2

    @property
    def step_temporaries(self) -> int:
        # A moment's update and its masked copy, or the denominator and the update; L2
        # decay adds the decayed gradient.
        return 2 + int(self.weight_decay > 0 and not self.decoupled)

    def init(self, params: torch.Tensor) -> OptimizerState:
        return {
            "exp_avg": torch.zeros_like(params),
            "exp_avg_sq": torch.zeros_like(params),
            "step": torch.zeros(len(params), dtype=torch.int64, device=params.device),
        }

    def step(
        self,
        params: torch.Tensor,
        grads: torch.Tensor,
        state: OptimizerState,
        active: torch.Tensor,
        lr: torch.Tensor,
    ) -> None:
        # The same tensor operations as torch.optim.Adam's single-tensor path, per row, with
        # its Python-float scalars as float64 rows cast to the parameters' dtype.
        beta1, beta2 = self.betas
        dtype, rows = params.dtype, active[:, None]
        if self.weight_decay and self.decoupled:
            params.mul_(torch.where(active, 1 - lr * self.weight_decay, 1.0).to(dtype)[:, None])
        elif self.weight_decay:
            grads = grads.add(params, alpha=self.weight_decay)
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        exp_avg.copy_(torch.where(rows, exp_avg.lerp(grads, 1 - beta1), exp_avg))
        squares = exp_avg_sq.mul(beta2).addcmul_(grads, grads, value=1 - beta2)
        exp_avg_sq.copy_(torch.where(rows, squares, exp_avg_sq))
        del squares
        state["step"].add_(active)
        steps = state["step"].clamp_min(1).to(torch.float64)  # inactive rows at 0 step by 0
        step_size = torch.where(active, -lr / (1 - beta1**steps), 0.0).to(dtype)
        correction = (1 - beta2**steps).sqrt().to(dtype)
        denominator = exp_avg_sq.sqrt().div_(correction[:, None]).add_(self.eps)
        params.add_((step_size[:, None] * exp_avg).div_(denominator))

    def torch_optimizer(self, weights: Sequence[torch.nn.Parameter]) -> torch.optim.Optimizer:
        kind = torch.optim.AdamW if self.decoupled else torch.optim.Adam
        return kind(
            weights,
            lr=self.lr,
            betas=self.betas,
            eps=self.eps,
            weight_decay=self.weight_decay,
            foreach=False,
        )


@dataclass(frozen=True)
class AdamW(Adam):
    """AdamW (Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019), as
    ``torch.optim.AdamW``: Adam whose weight decay shrinks the parameters,
    ``x <- (1 - lr weight_decay) x``, before the step instead of entering the gradient."""

    weight_decay: float = 0.01

    decoupled: ClassVar[bool] = True
