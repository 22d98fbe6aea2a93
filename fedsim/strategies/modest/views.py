"""Every node's own view of the population, as MoDeST keeps it (de Vos et al., 2023, v1).

Row i of each array is node i's view: for every node j the highest round in which i has
evidence that j was alive, j's membership index (-1: i does not know j) and whether j's
latest announcement was a graceful leave.  Views travel with every model message and merge
by maximum; join announcements wait in ``pending`` until the receiver's next model send.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

UNKNOWN = -1


class Views:
    """The views of ``num_nodes`` nodes; ``known`` nodes start out knowing each other."""

    def __init__(self, num_nodes: int, known: np.ndarray) -> None:
        self.last_round = np.full((num_nodes, num_nodes), UNKNOWN, dtype=np.int32)
        self.membership = np.full((num_nodes, num_nodes), UNKNOWN, dtype=np.int32)
        self.leaving = np.zeros((num_nodes, num_nodes), dtype=bool)
        members = np.flatnonzero(known)
        self.last_round[np.ix_(members, members)] = 0
        self.membership[np.ix_(members, members)] = 0
        self.train_round = np.zeros(num_nodes, dtype=np.int64)  # highest aggregated index seen
        self.aggregate_round = np.zeros(num_nodes, dtype=np.int64)  # highest trained index seen
        self.pending: dict[int, dict[int, tuple[int, int]]] = {}

    def bootstrap(self, node: int, known: np.ndarray, index: int) -> None:
        """A joining ``node`` knows the initial participants (the bootstrap list) and itself."""
        unknown = self.membership[node] == UNKNOWN
        learn = unknown & known
        self.membership[node, learn] = 0
        self.last_round[node, learn] = np.maximum(self.last_round[node, learn], 0)
        self.membership[node, node] = index
        self.leaving[node, node] = False
        self.last_round[node, node] = self.round_estimate(node)

    def round_estimate(self, node: int) -> int:
        """The newest round ``node`` knows of (sent with every ping, pong and announcement)."""
        return int(
            max(self.train_round[node], self.aggregate_round[node], self.last_round[node].max())
        )

    def candidates(self, node: int, round_idx: int, inactivity_threshold: int) -> np.ndarray:
        """Who ``node`` may sample in ``round_idx``: known, not left, recently seen; and itself."""
        row = self.last_round[node]
        active = (self.membership[node] != UNKNOWN) & ~self.leaving[node]
        active &= row >= round_idx - inactivity_threshold
        active[node] = True
        return np.flatnonzero(active)

    def known(self, node: int) -> np.ndarray:
        """Nodes in ``node``'s view that have not left (itself excluded)."""
        known = (self.membership[node] != UNKNOWN) & ~self.leaving[node]
        known[node] = False
        return np.flatnonzero(known)

    def entries(self, node: int) -> int:
        """Number of entries of ``node``'s view (what a piggybacked view costs)."""
        return int((self.membership[node] != UNKNOWN).sum())

    def snapshot(self, node: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """A copy of ``node``'s view, as it travels with a message."""
        return (
            self.last_round[node].copy(),
            self.membership[node].copy(),
            self.leaving[node].copy(),
        )

    def merge(self, node: int, view: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
        """Merge a received view: newest round per entry; a higher membership index wins.

        Unknown entries are copied (their index -1 loses to any known one).  This is the
        fixed merge (commit 2d45f90): a membership update keeps ``last_round``.
        """
        last_round, membership, leaving = view
        np.maximum(self.last_round[node], last_round, out=self.last_round[node])
        newer = membership > self.membership[node]
        self.membership[node, newer] = membership[newer]
        self.leaving[node, newer] = leaving[newer]

    def saw(self, node: int, other: int, round_idx: int) -> None:
        """``node`` has evidence that ``other`` was alive in ``round_idx`` (if it knows it)."""
        if self.membership[node, other] != UNKNOWN:
            self.last_round[node, other] = max(self.last_round[node, other], round_idx)

    def announce(self, receiver: int, node: int, round_idx: int, index: int, leave: bool) -> None:
        """``receiver`` gets ``node``'s membership announcement: a leave applies now, a join
        after the receiver's next model send."""
        round_idx = max(round_idx, self.round_estimate(receiver))
        if leave:
            if index > self.membership[receiver, node]:
                self.membership[receiver, node] = index
                self.leaving[receiver, node] = True
            return
        self.pending.setdefault(receiver, {})[node] = (round_idx, index)

    def apply_pending(self, node: int) -> None:
        """Apply the joins ``node`` has heard of (called right after it sent a model)."""
        for joiner, (round_idx, index) in self.pending.pop(node, {}).items():
            if index > self.membership[node, joiner]:
                self.membership[node, joiner] = index
                self.leaving[node, joiner] = False
            self.last_round[node, joiner] = max(self.last_round[node, joiner], round_idx)

    def state(self) -> dict[str, Any]:
        return copy.deepcopy(vars(self))

    def restore(self, state: dict[str, Any]) -> None:
        vars(self).update(copy.deepcopy(state))
