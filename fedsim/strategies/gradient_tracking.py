"""Gradient tracking: decentralized SGD whose nodes follow a tracker of the average gradient."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from fedsim.errors import check
from fedsim.plans import Gossip, RoundPlan, Train
from fedsim.strategies.base import Federation, Strategy
from fedsim.strategies.dpsgd import START, UPDATE, KeepStartAndUpdate, _per_node
from fedsim.strategies.scaffold import Accumulate
from fedsim.training.transforms import GradientTransform, Slots

TRACKER = "tracker"  # per-row slot: y_i, the node's estimate of the average gradient
GRADIENT = "last_gradient"  # per-row slot: g_i(x_i) of the node's last step
FORMS = ("dsgt", "diging")


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
    """Gradient tracking, in one of two forms (``form``), both with y_0 = g_0 = G(x_0) and
    the combine-then-adapt tracker ``y_{k+1} = W y_k + G(x_{k+1}) - G(x_k)``:

    - ``dsgt`` (the default; Pu and Nedić, "Distributed stochastic gradient tracking
      methods", Math. Programming 2021): adapt-then-combine for the models,
      ``x_{k+1} = W (x_k - lr y_k)``;
    - ``diging`` (Nedić, Olshevsky and Shi, "Achieving geometric convergence for
      distributed optimization over time-varying graphs", SIAM J. Optim. 2017; the zoo
      spec's CTA form): combine-then-adapt, ``x_{k+1} = W x_k - lr y_k``, run as D-PSGD's
      combine_then_adapt is (train, go back to the start, gossip, add the update).

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

    def __init__(self, form: str = "dsgt") -> None:
        check(form in FORMS, f"strategy.form={form} is not one of: {', '.join(FORMS)}")
        self.form = form

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
        trackers = Gossip(mixing, payload=TRACKER)
        if self.form == "dsgt":
            train = Train(everyone, steps=1, fresh_optimizer=False, transforms=(TrackGradients(),))
            return RoundPlan(steps=(train, Gossip(mixing), trackers))
        transforms = (TrackGradients(), KeepStartAndUpdate())
        train = Train(everyone, steps=1, fresh_optimizer=False, transforms=transforms)
        restart = _per_node(everyone, payload=START)
        adapt = _per_node(everyone, payload=UPDATE, update=Accumulate())
        return RoundPlan(steps=(train, restart, Gossip(mixing), adapt, trackers))
