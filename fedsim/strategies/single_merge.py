"""Sparse random gossip with one global merge late in training."""

from __future__ import annotations

import math

import numpy as np

from fedsim import rng
from fedsim.errors import check
from fedsim.plans import Average, Gossip, RoundPlan, Train
from fedsim.strategies.base import Federation, Strategy, local_work
from fedsim.strategies.epidemic_learning import average_with_received, draw_peers


class SingleMerge(Strategy):
    """Decentralized SGD with a single global merge (Zhu, Zhang, Wang, Zhou and Wang, "A
    Single Merging Suffices: Recovering Server-based Learning Performance in Decentralized
    Learning", arXiv 2507.06542; v2 "On the Surprising Effectiveness of a Single Global
    Merging in Decentralized Learning", ICLR 2026; further.md, section 1).

    Every round every node trains, then averages uniformly with ``peers`` (r) distinct
    others it draws at random, ``x_i <- (x_i + sum_{j in P_i} x_j) / (1 + |P_i|)``, as the
    official code's ``random`` topology does (``core/gossip_matrix.py``): a fractional r
    gives a node floor(r) peers and one more with probability r - floor(r), so r = 0.2
    (the paper's figure 1) leaves most nodes alone most rounds.  In the ``merge_rounds``
    rounds from ``merge_round`` on, every node instead takes the uniform global average
    (the code's r = n - 1, a complete round), then sparse gossip resumes: one merge in the
    last round (``merge_round = rounds - 1``) is the paper's; a later start of a longer
    window its dense-window studies (``truncate_v2``).  A merge sends every node's model to
    every other: n (n - 1) messages, as the code's complete round does.
    """

    barrier = True

    def __init__(
        self,
        merge_round: int,
        merge_rounds: int = 1,
        peers: float = 0.2,
        local_epochs: int | None = 1,
        local_steps: int | None = None,
    ) -> None:
        check(merge_round >= 0, f"strategy.merge_round={merge_round} must be an integer >= 0")
        check(merge_rounds >= 1, f"strategy.merge_rounds={merge_rounds} must be an integer >= 1")
        check(peers >= 0, f"strategy.peers={peers} must be >= 0")
        self.merge_round, self.merge_rounds, self.peers = merge_round, merge_rounds, peers
        self.local_epochs, self.local_steps = local_work(local_epochs, local_steps)

    def validate(self, federation: Federation) -> None:
        check(
            federation.num_nodes >= 2,
            f"strategy=single_merge needs num_nodes >= 2, got {federation.num_nodes}",
        )
        check(
            self.peers <= federation.num_nodes - 1,
            f"strategy.peers={self.peers} must be <= num_nodes - 1 = {federation.num_nodes - 1}",
        )

    def merges(self, round_idx: int) -> bool:
        """Whether round ``round_idx`` ends with the global average."""
        return self.merge_round <= round_idx < self.merge_round + self.merge_rounds

    def plan(self, round_idx: int, federation: Federation) -> RoundPlan:
        everyone = np.arange(federation.num_nodes)
        train = Train(
            everyone, epochs=self.local_epochs, steps=self.local_steps, fresh_optimizer=False
        )
        if self.merges(round_idx):
            uniform = np.full(len(everyone), 1 / len(everyone))
            return RoundPlan(steps=(train, Average(everyone, everyone, uniform)))
        generator = rng.generator(federation.seed, rng.SAMPLING, round_idx)
        whole = math.floor(self.peers)
        counts = whole + (generator.random(len(everyone)) < self.peers - whole)
        nodes, pulled = draw_peers(generator, counts)
        mixing = average_with_received(pulled, nodes, len(everyone))
        return RoundPlan(steps=(train, Gossip(mixing)))
