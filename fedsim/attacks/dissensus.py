"""Dissensus: Byzantine neighbours cancel (or reverse) an honest node's pull towards its
honest neighbours in a gossip step."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp
import torch

from fedsim import rng
from fedsim.attacks.base import Attack
from fedsim.errors import check
from fedsim.messages import Outgoing
from fedsim.plans import RoundPlan

NEEDS_GOSSIP = (
    "attack=dissensus forges gossip messages from the step's mixing weights; use a strategy "
    "that mixes models on the graph (dpsgd, choco, s2s, s2a, gossip_learning), not one "
    "whose messages are uploads or pushes"
)


class Dissensus(Attack):
    """Each Byzantine node b picks one honest target i and sends, in a gossip step,

        x_i - epsilon * sum_{j in H, j ~ i} w_ij (x_j - x_i) / sum_{b' -> i} w_ib'

    (H the honest nodes, b' -> i the Byzantine nodes that target i), so that i's gossip
    step ``x_i + sum_j w_ij (received_j - x_i)`` loses its honest pull (epsilon = 1) or is
    pushed away from its honest neighbours (epsilon > 1).  He, Karimireddy and Jaggi,
    "Byzantine-robust decentralized learning via ClippedGossip", arXiv 2202.01545 (the EPFL
    code's ``DissensusWorker``).

    The code attaches each attacker to one target.  Here a node sends one message per step,
    the same to all its receivers, so b targets its honest receiver with the largest mixing
    weight w_ib (ties, as on a regular graph: one drawn from the seed for each attacker, so
    that attackers spread over targets rather than crowd the lowest ids; the same one every
    step while the weights stay), and its other receivers get the same message.  The
    cancellation is exact for a target all of whose Byzantine neighbours target it.
    Omniscient within the target's neighbourhood: it reads the messages its target and the
    target's honest neighbours send in the same step (the models; in CHOCO-Gossip the
    changes from their public replicas, which it forges alike).  A Byzantine node without an
    honest receiver, or whose target sends nothing this step, sends its message unchanged.
    Acts on gossip steps only; a run whose plan has none is refused.
    """

    omniscient = True
    links = ("d2d",)

    def __init__(
        self, epsilon: float = 1.0, fraction: float = 0.2, nodes: Sequence[int] | None = None
    ) -> None:
        super().__init__(fraction, nodes)
        check(
            np.isfinite(epsilon) and epsilon >= 0,
            f"attack.epsilon={epsilon} must be finite and >= 0",
        )
        self.epsilon = epsilon

    def check_plan(self, plan: RoundPlan) -> None:
        check(any(step.mixing_matrices() for step in plan.steps), NEEDS_GOSSIP)

    def forge(
        self, values: torch.Tensor, byzantine: torch.Tensor, outgoing: Outgoing
    ) -> torch.Tensor:
        check(outgoing.mixing is not None, NEEDS_GOSSIP)
        mixing = sp.csr_array(outgoing.mixing)
        senders = outgoing.senders
        attackers = senders[byzantine.cpu().numpy()]
        forged = values[byzantine].clone()
        size = max(mixing.shape[1], int(senders.max()) + 1)
        position = np.full(size, -1, dtype=np.int64)
        position[senders] = np.arange(len(senders))
        targets = self.targets(mixing, attackers, size, outgoing.seed)
        aimed = targets >= 0
        aimed[aimed] = position[targets[aimed]] >= 0  # the target's own model is sent
        if not aimed.any():
            return forged
        chosen, which = np.unique(targets[aimed], return_inverse=True)
        weight = np.bincount(which, mixing[targets[aimed], attackers[aimed]], len(chosen))
        pull = self.honest_pull(values, mixing, chosen, position)
        shift = pull / torch.as_tensor(weight, dtype=values.dtype, device=values.device)[:, None]
        rows = torch.as_tensor(which, device=values.device)
        own = values[torch.as_tensor(position[chosen], device=values.device)]
        forged[torch.as_tensor(aimed, device=values.device)] = (
            own[rows] - self.epsilon * shift[rows]
        )
        return forged

    def targets(
        self, mixing: sp.csr_array, attackers: np.ndarray, size: int, seed: int
    ) -> np.ndarray:
        """Each attacker's target: its honest receiver i != b with the largest W[i, b] (ties:
        the one of least draw, a function of (seed, b, i)), or -1 when it has none."""
        coo = mixing.tocoo()
        keep = (
            (coo.data != 0)
            & (coo.row != coo.col)
            & np.isin(coo.col, attackers)
            & ~np.isin(coo.row, self.byzantine)
        )
        receivers, attacking, weights = coo.row[keep], coo.col[keep], coo.data[keep]
        edges = torch.as_tensor(attacking * size + receivers)
        draws = rng.uniform(seed, rng.ATTACK, 0, edges, torch.zeros(1, dtype=torch.int64))
        order = np.lexsort((receivers, draws[:, 0].numpy(), -weights, attacking))
        attacking, first = np.unique(attacking[order], return_index=True)
        target_of = np.full(size, -1, dtype=np.int64)
        target_of[attacking] = receivers[order][first]
        return target_of[attackers]

    def honest_pull(
        self, values: torch.Tensor, mixing: sp.csr_array, chosen: np.ndarray, position: np.ndarray
    ) -> torch.Tensor:
        """``sum_{j in H, j != i} W[i, j] (x_j - x_i)`` for each target i of ``chosen``, over
        the honest neighbours whose messages ``values`` holds (their rows at ``position``)."""
        block = sp.csr_array(mixing[chosen]).tocoo()
        row, column, weights = block.row, block.col, block.data
        keep = (
            (weights != 0)
            & (column != chosen[row])
            & ~np.isin(column, self.byzantine)
            & (position[column] >= 0)
        )
        row, column, weights = row[keep], column[keep], weights[keep]
        device = values.device
        neighbours = values[torch.as_tensor(position[column], device=device)]
        targets = values[torch.as_tensor(position[chosen[row]], device=device)]
        scale = torch.as_tensor(weights, dtype=values.dtype, device=device)[:, None]
        pull = values.new_zeros(len(chosen), values.shape[1])
        return pull.index_add_(
            0, torch.as_tensor(row, device=device), scale * (neighbours - targets)
        )
