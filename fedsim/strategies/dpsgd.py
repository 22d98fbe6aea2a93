"""Decentralized parallel SGD: local training and gossip with the neighbours, in either order."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from fedsim.errors import check
from fedsim.plans import Aggregate, Average, Gossip, RoundPlan, Train
from fedsim.strategies.base import Federation, Strategy, local_work
from fedsim.strategies.scaffold import Accumulate
from fedsim.training.transforms import GradientTransform, Slots

ORDERS = ("adapt_then_combine", "combine_then_adapt")
START = "start"  # per-row slot: the model a node started this round's training from
UPDATE = "update"  # per-row slot: what this round's training added to it


@dataclass(frozen=True)
class KeepStartAndUpdate(GradientTransform):
    """Leaves every gradient as it is; after training keeps each node's start ``x`` and its
    update ``y - x`` (y the trained model) in the slots ``"start"`` and ``"update"``."""

    slots = (START, UPDATE)

    def finish(
        self,
        params: torch.Tensor,
        start: torch.Tensor,
        steps: torch.Tensor,
        lr: float | torch.Tensor,
        slots: Slots,
    ) -> None:
        slots[START].copy_(start)
        slots[UPDATE].copy_(params - start)


class DPSGD(Strategy):
    """D-PSGD (Lian et al., "Can Decentralized Algorithms Outperform Centralized Algorithms?",
    NeurIPS 2017).

    Every round every node runs local SGD (its optimizer state persists across rounds) and
    gossips with its neighbours through W, in one of two orders (the zoo spec, section 1):

    - ``adapt_then_combine`` (the default, as decentralizepy and the MoDeST paper's D-PSGD
      baseline run it): train, then send the trained model, ``X <- W (X - lr G(X))``;
    - ``combine_then_adapt`` (Lian et al.'s Algorithm 1): send the model from before
      training and add the local update after mixing, ``X <- W X - lr G(X)``, the gradient
      taken at the unmixed model (with several local steps, ``W X`` plus the update).

    Combine-then-adapt trains first and keeps each start and update in per-row slots; the
    nodes go back to their starts, gossip, and add their updates.  Rounds are globally
    synchronous: on the simulated clock every round starts when the slowest node has
    finished the last one (the barrier of the MoDeST paper's D-PSGD baseline).
    """

    uses_topology = True
    barrier = True

    def __init__(
        self,
        local_epochs: int | None = 1,
        local_steps: int | None = None,
        order: str = "adapt_then_combine",
    ) -> None:
        self.local_epochs, self.local_steps = local_work(local_epochs, local_steps)
        check(order in ORDERS, f"strategy.order={order} is not one of: {', '.join(ORDERS)}")
        self.order = order

    def validate(self, federation: Federation) -> None:
        check(
            federation.num_nodes >= 2,
            f"strategy=dpsgd needs num_nodes >= 2, got {federation.num_nodes}",
        )
        federation.topology.require("strategy=dpsgd", connected=True, doubly_stochastic=True)

    def plan(self, round_idx: int, federation: Federation) -> RoundPlan:
        everyone = np.arange(federation.num_nodes)
        mixing = Gossip(federation.topology.mixing(round_idx))
        if self.order == "adapt_then_combine":
            return RoundPlan(steps=(self._train(everyone), mixing))
        train = self._train(everyone, transforms=(KeepStartAndUpdate(),))
        restart = _per_node(everyone, payload=START)
        adapt = _per_node(everyone, payload=UPDATE, update=Accumulate())
        return RoundPlan(steps=(train, restart, mixing, adapt))

    def _train(self, nodes: np.ndarray, transforms: tuple = ()) -> Train:
        return Train(
            nodes,
            epochs=self.local_epochs,
            steps=self.local_steps,
            fresh_optimizer=False,
            transforms=transforms,
        )


def _per_node(nodes: np.ndarray, payload: str, update: Accumulate | None = None) -> Aggregate:
    """Each node's model becomes its own row of ``payload`` (or, with ``update``, adds it);
    nothing is sent."""
    one = np.ones(1)
    return Aggregate(
        tuple(
            Average(np.array([node]), np.array([node]), one, update, payload, "params")
            for node in nodes
        )
    )
