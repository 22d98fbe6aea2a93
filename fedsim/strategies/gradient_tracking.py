"""Gradient tracking: decentralized SGD whose nodes follow a tracker of the average gradient."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from fedsim.errors import check
from fedsim.plans import Gossip, RoundPlan, Train
from fedsim.strategies.base import Federation, Strategy
from fedsim.training.transforms import GradientTransform, Slots

TRACKER = "tracker"  # per-row slot: y_i, the node's estimate of the average gradient
GRADIENT = "last_gradient"  # per-row slot: g_i(x_i) of the node's last step


@dataclass(frozen=True)
class TrackGradients(GradientTransform):
    """Steps along ``y <- y + g - g_last`` instead of ``g`` and keeps ``y`` and ``g``; with
    both slots zero at first, the first round's tracker is its gradient (y_0 = g_0)."""

    slots = (TRACKER, GRADIENT)

    def __call__(
        self, grads: torch.Tensor, params: torch.Tensor, start: torch.Tensor, slots: Slots
    ) -> torch.Tensor:
        tracker = slots[TRACKER] + grads - slots[GRADIENT]
        slots[TRACKER].copy_(tracker)
        slots[GRADIENT].copy_(grads)
        return tracker


class GradientTracking(Strategy):
    """Gradient tracking in the DSGT form (Pu and Nedić, "Distributed stochastic gradient
    tracking methods", Math. Programming 2021; the tracker of DIGing, Nedić, Olshevsky and
    Shi, SIAM J. Optim. 2017): adapt-then-combine for the models, combine-then-adapt for
    the trackers,

        y_0 = g_0 = G(x_0)
        x_{k+1} = W (x_k - lr y_k)
        y_{k+1} = W y_k + G(x_{k+1}) - G(x_k),

    G the nodes' stochastic gradients (the one mini-batch of the round's single local SGD
    step; the gradient stored is the one used, zoo spec pitfall 2).  The average of the
    trackers is the average of the last gradients every round, so with full gradients and
    a constant lr the nodes reach the exact optimum on heterogeneous data.

    Each round is one local step (the tracker in place of the gradient), the gossip of the
    models and the gossip of the trackers: two messages per edge per round, both counted.
    The trackers are mixed by plain W, so an aggregator that combines models itself, or an
    attack or compressor between nodes, is refused (the backend says so).  The recursion
    assumes plain SGD: momentum (or Adam) is refused.
    """

    uses_topology = True
    barrier = True
    assumes_sgd: ClassVar[bool] = True  # fedsim.build refuses other local optimizers

    def validate(self, federation: Federation) -> None:
        check(
            federation.num_nodes >= 2,
            f"strategy=gradient_tracking needs num_nodes >= 2, got {federation.num_nodes}",
        )
        check(
            federation.momentum == 0,
            f"strategy=gradient_tracking assumes plain SGD; "
            f"optimizer.momentum={federation.momentum} must be 0",
        )
        federation.topology.require(
            "strategy=gradient_tracking", connected=True, doubly_stochastic=True
        )

    def plan(self, round_idx: int, federation: Federation) -> RoundPlan:
        everyone = np.arange(federation.num_nodes)
        mixing = federation.topology.mixing(round_idx)
        train = Train(everyone, steps=1, fresh_optimizer=False, transforms=(TrackGradients(),))
        return RoundPlan(steps=(train, Gossip(mixing), Gossip(mixing, payload=TRACKER)))
