"""SCAFFOLD: FedAvg whose clients correct their drift with control variates."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from fedsim.errors import check
from fedsim.plans import Average, RoundPlan, Train
from fedsim.server_optimizers import ServerMomentum
from fedsim.server_optimizers.base import State
from fedsim.strategies.base import Federation
from fedsim.strategies.fedavg import FedAvg
from fedsim.training.transforms import GradientTransform, Slots

CONTROL = "control"  # c_i at node i, c at the server
RECEIVED = "server_control"  # c as a client received it this round
CHANGE = "control_change"  # c_i+ - c_i, what a client sends back


OPTIONS = (1, 2)


@dataclass(frozen=True)
class ControlVariates(GradientTransform):
    """Each local step follows ``g - c_i + c``; after the K steps at learning rate lr,
    option II: ``c_i+ = c_i - c + (x - y) / (K lr)`` (x the start, y the end; lr the rate
    the schedule gave, K lr the sum of the rates when they changed from step to step);
    option I: ``c_i+ = g_i(x)``, a stochastic gradient at x, here the gradient of the
    round's first mini-batch, taken at x (with full-batch steps, the local gradient)."""

    option: int = 2
    slots = (CONTROL, RECEIVED, CHANGE)

    def __call__(
        self, grads: torch.Tensor, params: torch.Tensor, start: torch.Tensor, slots: Slots
    ) -> torch.Tensor:
        if self.option == 1:  # keep g_i(x) in CHANGE until finish: rows still at x
            at_start = (params == start).all(dim=1)
            slots[CHANGE][at_start] = grads[at_start]
        return grads - slots[CONTROL] + slots[RECEIVED]

    def finish(
        self,
        params: torch.Tensor,
        start: torch.Tensor,
        steps: torch.Tensor,
        lr: float | torch.Tensor,
        slots: Slots,
    ) -> None:
        took = steps > 0  # a node without data takes no step and keeps its c_i
        if self.option == 1:
            change = (slots[CHANGE] - slots[CONTROL]) * took[:, None]
        else:
            scale = torch.where(took, 1 / (steps.clamp_min(1) * lr), 0.0).to(params.dtype)
            change = (start - params) * scale[:, None] - slots[RECEIVED] * took[:, None]
        slots[CHANGE].copy_(change)
        slots[CONTROL].add_(change)


@dataclass(frozen=True)
class Accumulate:
    """A server update that adds the weighted sum it receives: ``c <- c + sum_i w_i dc_i``."""

    def init(self, rows: torch.Tensor) -> State:
        return {}

    def update(
        self, rows: torch.Tensor, average: torch.Tensor, state: State
    ) -> tuple[torch.Tensor, State]:
        return rows + average, state


class Scaffold(FedAvg):
    """SCAFFOLD (Karimireddy et al., "SCAFFOLD: Stochastic Controlled Averaging for Federated
    Learning", ICML 2020), Algorithm 1 with option II control variates (``option=1``:
    option I, the gradient at x; :class:`ControlVariates`).

    The server sends the model x and its control variate c; each sampled client i trains
    from x with corrected steps ``g - c_i + c`` (c_i starts at 0), sets
    ``c_i <- c_i - c + (x - y_i) / (K lr)`` (option II) and sends back ``y_i`` and the
    change of c_i; the server takes ``x <- x + server_lr mean_i (y_i - x)`` and
    ``c <- c + (1/N) sum_i dc_i`` (N all clients, so c stays the mean of every c_i).
    Both directions carry two model-sized vectors, counted as two messages.  Clients
    average uniformly (the paper; Flower weighs by examples: ``weighting=num_examples``).
    Option II assumes plain SGD, so with it a local optimizer with momentum (or Adam) is
    refused.
    """

    def __init__(
        self,
        server_lr: float = 1.0,
        sample_size: int | None = 10,
        fraction: float | None = None,
        local_epochs: int | None = 1,
        local_steps: int | None = None,
        weighting: str = "uniform",
        option: int = 2,
    ) -> None:
        super().__init__(sample_size, fraction, local_epochs, local_steps, weighting)
        check(server_lr > 0, f"strategy.server_lr={server_lr} must be > 0")
        check(option in OPTIONS, f"strategy.option={option} is not one of: 1, 2")
        self.option = option
        self.assumes_sgd = option == 2  # fedsim.build refuses other local optimizers
        self.server_optimizer = None if server_lr == 1 else ServerMomentum(server_lr, 0.0)

    def held_nodes(self) -> None:
        """Every client keeps its control variate between rounds."""
        return None

    def validate(self, federation: Federation) -> None:
        super().validate(federation)
        check(
            self.option == 1 or federation.momentum == 0,
            f"strategy=scaffold's option II control variates assume plain SGD; "
            f"optimizer.momentum={federation.momentum} must be 0 (or strategy.option=1)",
        )

    def plan(self, round_idx: int, federation: Federation) -> RoundPlan:
        server = np.array([federation.num_nodes])
        sampled = self.sample(round_idx, federation)
        everyone = np.full(len(sampled), 1.0 / federation.num_nodes)
        return RoundPlan(
            steps=(
                Average(server, sampled, np.ones(1)),
                Average(server, sampled, np.ones(1), payload=CONTROL, into=RECEIVED),
                Train(
                    sampled,
                    epochs=self.local_epochs,
                    steps=self.local_steps,
                    transforms=(ControlVariates(self.option),),
                ),
                self.aggregation(sampled, round_idx, federation),
                Average(sampled, server, everyone, Accumulate(), payload=CHANGE, into=CONTROL),
            )
        )
