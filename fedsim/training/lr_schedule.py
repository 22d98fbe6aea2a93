"""Learning-rate schedules of the local optimizer, by round or by each node's own local steps.

A schedule scales ``optimizer.lr`` (eta_0) by an index t: ``by=round``, the round (every
local step of round t takes eta_t, as the baselines' papers index their schedules); or
``by=local_step``, the node's own count of local steps taken since the run began (the
backend keeps one counter per row).  Each formula is the closed form of the
``torch.optim.lr_scheduler`` of the same name after t calls of ``step()``.  With
``warmup`` w > 0 the rate is further scaled by ``min(1, (t + 1) / w)`` (torch's ``LinearLR``
from 1/w to 1 over w - 1 calls, chained), so it grows linearly for w rounds (or steps).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from fedsim.errors import check

BY = ("round", "local_step")


@dataclass(frozen=True, kw_only=True)
class LRSchedule:
    """The schedule interface: :meth:`decay` is eta_t before warm-up; ``by`` and
    ``warmup`` as in the module docstring."""

    by: str = "round"
    warmup: int = 0

    def __post_init__(self) -> None:
        check(self.by in BY, f"lr_schedule.by={self.by} is not one of: {', '.join(BY)}")
        check(self.warmup >= 0, f"lr_schedule.warmup={self.warmup} must be >= 0")

    def decay(self, lr: float, index: torch.Tensor) -> torch.Tensor:
        """eta_t for the float64 tensor of indices t, from the base rate ``lr``."""
        raise NotImplementedError

    def rate(self, lr: float, index: torch.Tensor) -> torch.Tensor:
        """The learning rate at each index (float64), warm-up included."""
        rates = self.decay(lr, index)
        if self.warmup:
            rates = rates * ((index + 1) / self.warmup).clamp(max=1.0)
        return rates

    def round_rate(self, lr: float, round_idx: int) -> float:
        """The rate of round ``round_idx`` (``by=round``)."""
        return float(self.rate(lr, torch.tensor(float(round_idx), dtype=torch.float64)))

    def step_rates(
        self,
        lr: float,
        round_idx: int,
        steps_before: torch.Tensor | None,
        active: torch.Tensor,
    ) -> torch.Tensor:
        """The (nodes, steps) float64 rates of a round's local steps: ``steps_before``
        (nodes,) are the local steps each node took in earlier rounds (``by=local_step``
        only) and ``active`` (nodes, steps) the steps it takes now (padding steps get a rate
        they never use)."""
        if self.by == "round" or steps_before is None:
            return torch.full(
                active.shape,
                self.round_rate(lr, round_idx),
                dtype=torch.float64,
                device=active.device,
            )
        taken = active.to(torch.int64)
        index = steps_before[:, None] + taken.cumsum(dim=1) - taken
        return self.rate(lr, index.to(torch.float64))

    def mean_rate(
        self, lr: float, round_idx: int, rates: torch.Tensor, active: torch.Tensor
    ) -> float | torch.Tensor:
        """The rate a round's local steps took: ``by=round`` the round's rate; ``by=local_step``
        each node's (nodes,) mean over the steps it took, so that steps x rate is their sum
        (what SCAFFOLD's option II divides by)."""
        if self.by == "round":
            return self.round_rate(lr, round_idx)
        taken = active.sum(dim=1)
        return (rates * active).sum(dim=1) / taken.clamp_min(1)


@dataclass(frozen=True, kw_only=True)
class Constant(LRSchedule):
    """eta_t = eta_0 (``torch.optim.lr_scheduler.ConstantLR`` with factor 1)."""

    def decay(self, lr: float, index: torch.Tensor) -> torch.Tensor:
        return torch.full_like(index, lr)


@dataclass(frozen=True, kw_only=True)
class StepDecay(LRSchedule):
    """eta_t = eta_0 gamma^floor(t / step_size) (``StepLR``)."""

    gamma: float = 0.1
    step_size: int = 30

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.gamma > 0, f"lr_schedule.gamma={self.gamma} must be > 0")
        check(self.step_size >= 1, f"lr_schedule.step_size={self.step_size} must be >= 1")

    def decay(self, lr: float, index: torch.Tensor) -> torch.Tensor:
        return lr * self.gamma ** torch.div(index, self.step_size, rounding_mode="floor")


@dataclass(frozen=True, kw_only=True)
class Exponential(LRSchedule):
    """eta_t = eta_0 gamma^t (``ExponentialLR``; gamma about 0.998 per round is common in
    decentralized-learning papers)."""

    gamma: float = 0.998

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.gamma > 0, f"lr_schedule.gamma={self.gamma} must be > 0")

    def decay(self, lr: float, index: torch.Tensor) -> torch.Tensor:
        return lr * self.gamma**index


@dataclass(frozen=True, kw_only=True)
class Cosine(LRSchedule):
    """eta_t = eta_min + (eta_0 - eta_min) (1 + cos(pi t / period)) / 2 for t <= period, then
    eta_min (``CosineAnnealingLR`` with T_max = period, which would rise again after it).
    ``period`` counts the schedule's index: rounds by default, local steps with
    ``by=local_step``."""

    period: int
    eta_min: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.period >= 1, f"lr_schedule.period={self.period} must be >= 1")
        check(self.eta_min >= 0, f"lr_schedule.eta_min={self.eta_min} must be >= 0")

    def decay(self, lr: float, index: torch.Tensor) -> torch.Tensor:
        angle = math.pi * index.clamp(max=self.period) / self.period
        return self.eta_min + (lr - self.eta_min) * (1 + torch.cos(angle)) / 2
