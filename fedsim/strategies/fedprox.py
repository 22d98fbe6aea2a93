"""FedProx: FedAvg whose clients minimise their loss plus a proximal term."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from fedsim import rng
from fedsim.errors import check
from fedsim.plans import Train
from fedsim.strategies.base import Federation
from fedsim.strategies.fedavg import FedAvg
from fedsim.training.transforms import GradientTransform, Slots

STRAGGLERS = 1  # the sampling stream's coordinate for who straggles


@dataclass(frozen=True)
class Proximal(GradientTransform):
    """The gradient of ``F(w) + mu/2 ||w - w_start||^2``: ``g + mu (w - w_start)``."""

    mu: float

    def __call__(
        self, grads: torch.Tensor, params: torch.Tensor, start: torch.Tensor, slots: Slots
    ) -> torch.Tensor:
        return grads + self.mu * (params - start)


class FedProx(FedAvg):
    """FedProx (Li et al., "Federated Optimization in Heterogeneous Networks", MLSys 2020).

    As FedAvg, but every local step follows the gradient of ``F_i(w) + mu/2 ||w - x^t||^2``,
    with ``x^t`` the global model the client started the round from (the official code's
    ``PerturbedGradientDescent``).  With ``drop_percent`` p, a seeded share p of the
    sampled clients are stragglers: they run a number of epochs (or steps) drawn uniformly
    from 1 .. E-1 instead of E, and their partial work is aggregated as everyone's.
    ``mu=0`` and ``drop_percent=0`` is FedAvg exactly.
    """

    def __init__(
        self,
        mu: float = 0.01,
        drop_percent: float = 0.0,
        sample_size: int | None = 10,
        fraction: float | None = None,
        local_epochs: int | None = 1,
        local_steps: int | None = None,
        weighting: str = "num_examples",
        fresh_optimizer: bool = True,
    ) -> None:
        super().__init__(
            sample_size, fraction, local_epochs, local_steps, weighting, fresh_optimizer
        )
        check(mu >= 0, f"strategy.mu={mu} must be >= 0")
        check(0 <= drop_percent < 1, f"strategy.drop_percent={drop_percent} must lie in [0, 1)")
        self.mu, self.drop_percent = mu, drop_percent

    def local_training(self, sampled: np.ndarray, round_idx: int, federation: Federation) -> Train:
        """Local SGD on the proximal objective, stragglers doing part of the work."""
        work = self.local_epochs if self.local_epochs is not None else self.local_steps
        per_client = np.full(len(sampled), work, dtype=np.int64)
        stragglers = len(sampled) - round(len(sampled) * (1 - self.drop_percent))
        if stragglers and work > 1:
            generator = rng.generator(federation.seed, rng.SAMPLING, round_idx, STRAGGLERS)
            slow = generator.choice(len(sampled), stragglers, replace=False)
            per_client[slow] = generator.integers(1, work, size=stragglers)
        partial = per_client if stragglers else work
        return Train(
            sampled,
            epochs=partial if self.local_epochs is not None else None,
            steps=partial if self.local_steps is not None else None,
            fresh_optimizer=self.fresh_optimizer,
            transforms=(Proximal(self.mu),) if self.mu else (),
        )
