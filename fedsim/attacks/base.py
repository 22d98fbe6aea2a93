"""What every Byzantine attack shares: which nodes attack, forging only their messages, and
(for a data-poisoning attack) the data they train on."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from fedsim import rng
from fedsim.data.datasets import Dataset
from fedsim.errors import check
from fedsim.messages import MessageTransform, Outgoing


class Attack(MessageTransform):
    """Byzantine nodes forge the messages they send to servers and to other nodes; every
    other message arrives as computed.  The attackers are fixed for the run: ``nodes``
    (explicit ids), else ``fraction`` of the nodes rounded down, drawn from the seed.
    Subclasses give :meth:`forge`; an ``omniscient`` one reads the honest messages of the
    same step (all of them, in the local backend) before it forges.  A data-poisoning attack
    gives :meth:`poison` instead (and acts on no link), and says so in ``poisons_data``.
    """

    omniscient = False
    poisons_data = False

    def __init__(self, fraction: float = 0.2, nodes: Sequence[int] | None = None) -> None:
        check(0 <= fraction < 1, f"attack.fraction={fraction} must be in [0, 1)")
        self.fraction, self.nodes = fraction, None if nodes is None else list(nodes)
        self.byzantine = np.empty(0, np.int64)

    def prepare(self, num_nodes: int, seed: int) -> None:
        if self.nodes is not None:
            nodes = np.asarray(self.nodes, np.int64)
            check(
                bool(((nodes >= 0) & (nodes < num_nodes)).all())
                and len(set(self.nodes)) == len(nodes),
                f"attack.nodes={self.nodes} must be distinct node ids in 0..{num_nodes - 1}",
            )
            check(len(nodes) < num_nodes, f"attack.nodes={self.nodes} leaves no honest node")
            self.byzantine = np.sort(nodes)
            return
        count = int(self.fraction * num_nodes)
        drawn = rng.generator(seed, rng.ATTACK).choice(num_nodes, size=count, replace=False)
        self.byzantine = np.sort(drawn).astype(np.int64)

    def byzantine_nodes(self) -> np.ndarray:
        return self.byzantine

    def poison(
        self, dataset: Dataset, shards: list[np.ndarray]
    ) -> tuple[Dataset, list[np.ndarray]]:
        """The training data and each node's example indices the nodes train on, given the
        partition's ``shards`` of ``dataset``; after :meth:`prepare`, before the run's task is
        built (so every backend trains on it).  As given, unless the attack poisons data:
        it must then leave the test split and the examples honest nodes hold untouched."""
        return dataset, shards

    def __call__(self, values: torch.Tensor, outgoing: Outgoing) -> torch.Tensor:
        bad = np.isin(outgoing.senders, self.byzantine)
        if not bad.any():
            return values
        forged = values.clone()
        mask = torch.as_tensor(bad, device=values.device)
        forged[mask] = self.forge(values, mask, outgoing)
        return forged

    def forge(
        self, values: torch.Tensor, byzantine: torch.Tensor, outgoing: Outgoing
    ) -> torch.Tensor:
        """The messages the senders flagged by ``byzantine`` (a (k,) bool mask) send in place
        of their rows of ``values`` (k, d): a (byzantine.sum(), d) tensor."""
        raise NotImplementedError
