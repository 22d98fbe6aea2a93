"""Decentralized parallel SGD: local training, then gossip with the neighbours."""

from __future__ import annotations

import numpy as np

from fedsim.errors import check
from fedsim.plans import Gossip, RoundPlan, Train
from fedsim.strategies.base import Federation, Strategy, local_work


class DPSGD(Strategy):
    """D-PSGD (Lian et al., "Can Decentralized Algorithms Outperform Centralized Algorithms?",
    NeurIPS 2017).

    Every round every node runs local SGD (its optimizer state persists across rounds), then
    replaces its model by the W-weighted average of its own and its neighbours' models.
    fedsim uses the adapt-then-combine order ``X <- W (X - lr G)``, as decentralizepy and the
    MoDeST paper's D-PSGD baseline do; Lian et al.'s Algorithm 1 instead adds the gradient,
    taken at the unmixed model, after mixing (``W X - lr G``).  Rounds are globally
    synchronous: on the simulated clock every round starts when the slowest node has
    finished the last one (the barrier of the MoDeST paper's D-PSGD baseline).
    """

    uses_topology = True
    barrier = True

    def __init__(self, local_epochs: int | None = 1, local_steps: int | None = None) -> None:
        self.local_epochs, self.local_steps = local_work(local_epochs, local_steps)

    def validate(self, federation: Federation) -> None:
        check(
            federation.num_nodes >= 2,
            f"strategy=dpsgd needs num_nodes >= 2, got {federation.num_nodes}",
        )
        federation.topology.require("strategy=dpsgd", connected=True, doubly_stochastic=True)

    def plan(self, round_idx: int, federation: Federation) -> RoundPlan:
        everyone = np.arange(federation.num_nodes)
        return RoundPlan(
            steps=(
                Train(
                    everyone,
                    epochs=self.local_epochs,
                    steps=self.local_steps,
                    fresh_optimizer=False,
                ),
                Gossip(federation.topology.mixing(round_idx)),
            )
        )
