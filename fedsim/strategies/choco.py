"""CHOCO-SGD and CHOCO-Gossip: decentralized learning with compressed messages that converges."""

from __future__ import annotations

import numpy as np

from fedsim.errors import check
from fedsim.plans import Gossip, RoundPlan, Train
from fedsim.strategies.base import Federation
from fedsim.strategies.dpsgd import DPSGD


class Choco(DPSGD):
    """CHOCO-SGD (Koloskova, Stich and Jaggi, "Decentralized Stochastic Optimization and
    Gossip Algorithms with Compressed Communication", ICML 2019, Algorithm 2).

    Every round every node trains, then sends the compressed change of its model from its
    public replica, ``q_i = C(x_i - x^_i)`` (``compression=...``; none: exact), every
    holder of the replica adds it, ``x^_i <- x^_i + q_i``, and each node takes the
    consensus step ``x_i <- x_i + gamma sum_j w_ij (x^_j - x^_i)`` (``consensus_lr``).
    Replicas start at zero (decentralizepy; the official code starts them at x^0: the
    fixed point is the same, the first messages differ).  With ``gossip_only`` no node
    trains: CHOCO-Gossip, average consensus of the initial models (``init=independent``).
    Naive compressed D-PSGD (``strategy=dpsgd compression=...``) compresses the models
    themselves and stalls; this is what CHOCO fixes.
    """

    def __init__(
        self,
        consensus_lr: float = 0.5,
        gossip_only: bool = False,
        local_epochs: int | None = 1,
        local_steps: int | None = None,
    ) -> None:
        check(
            0 < consensus_lr <= 1,
            f"strategy.consensus_lr={consensus_lr} must be in (0, 1]",
        )
        super().__init__(local_epochs, local_steps)
        self.consensus_lr, self.gossip_only = consensus_lr, gossip_only

    def plan(self, round_idx: int, federation: Federation) -> RoundPlan:
        weights = federation.topology.mixing(round_idx)
        consensus = Gossip(weights, step_size=self.consensus_lr, replicas=True)
        if self.gossip_only:
            return RoundPlan(steps=(consensus,))
        everyone = np.arange(federation.num_nodes)
        train = Train(
            everyone, epochs=self.local_epochs, steps=self.local_steps, fresh_optimizer=False
        )
        return RoundPlan(steps=(train, consensus))
