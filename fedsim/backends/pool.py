"""Rows on demand (``backend.rows=on_demand``): a backend holds a node's row only while it is
in use, so that a population of millions of stateless clients costs memory per cohort."""

from __future__ import annotations

import numpy as np
import torch

from fedsim.errors import RunError, check
from fedsim.plans import Aggregate, Average, Merge, Push, RoundPlan, Train

ROWS = ("all", "on_demand")


def check_rows_setting(rows: str) -> None:
    """``backend.rows`` must be legal (any backend)."""
    check(rows in ROWS, f"backend.rows={rows!r} is not one of: {', '.join(ROWS)}")


class RowPool:
    """Where the held rows of a federation of ``num_nodes`` nodes and ``num_servers``
    servers lie: node rows in slots ``0 .. capacity - 1``, the servers' after them.

    A node is admitted by the first plan that uses its row (:func:`rows_used`) and released
    when a later plan starts without it, unless the strategy keeps it (:meth:`keep`: the
    clients whose models are in flight, ``Strategy.held_nodes``).  So between two rounds the
    pool holds the last round's nodes, whose models the reporter may evaluate, and the kept
    ones.  Freed slots are reused, lowest first, so a cohort admitted into an emptied pool
    lies in consecutive slots (trained in place).  Memory: the held rows, plus 16 bytes per
    held node here; nothing per node of the population.
    """

    def __init__(self, num_nodes: int, num_servers: int) -> None:
        self.num_nodes, self.num_servers = num_nodes, num_servers
        self.nodes = np.empty(0, np.int64)  # held nodes, sorted
        self.slots = np.empty(0, np.int64)  # the slot of each held node
        self.kept = np.empty(0, np.int64)
        self.capacity = 0

    @property
    def num_rows(self) -> int:
        """Physical rows: the node slots and the servers."""
        return self.capacity + self.num_servers

    def physical(self, rows: np.ndarray) -> np.ndarray:
        """The physical positions of logical ``rows`` (nodes held here, or servers)."""
        rows = np.asarray(rows, dtype=np.int64)
        out = rows - self.num_nodes + self.capacity  # servers' positions
        nodes = rows < self.num_nodes
        if nodes.any():
            wanted = rows[nodes]
            position = np.searchsorted(self.nodes, wanted)
            found = position < len(self.nodes)
            found[found] = self.nodes[position[found]] == wanted[found]
            if not found.all():
                raise RunError(
                    f"rows {wanted[~found][:5].tolist()} are not held (backend.rows=on_demand "
                    "holds a node's row only in the rounds that use it and while the strategy "
                    "keeps it); this strategy reads a node's row between its rounds: run it "
                    "with backend.rows=all"
                )
            out[nodes] = self.slots[position]
        return out

    def keep(self, nodes: np.ndarray) -> None:
        """Nodes whose rows must outlive the next plans until no longer kept."""
        self.kept = np.unique(np.asarray(nodes, dtype=np.int64))

    def admit(self, used: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Hold the nodes ``used`` (logical rows; servers are held always), releasing the held
        nodes that are neither used nor kept; returns the newly held nodes and their slots,
        which the backend fills.  ``capacity`` grows when the free slots do not suffice."""
        used = np.unique(np.asarray(used, dtype=np.int64))
        used = used[used < self.num_nodes]
        staying = np.isin(self.nodes, np.union1d(used, self.kept))
        self.nodes, self.slots = self.nodes[staying], self.slots[staying]
        new = np.setdiff1d(used, self.nodes, assume_unique=True)
        free = np.setdiff1d(np.arange(self.capacity), self.slots, assume_unique=True)
        if len(free) < len(new):
            grown = self.capacity + len(new) - len(free)
            free = np.concatenate([free, np.arange(self.capacity, grown)])
            self.capacity = grown
        taken = free[: len(new)]
        nodes, slots = np.concatenate([self.nodes, new]), np.concatenate([self.slots, taken])
        order = np.argsort(nodes)
        self.nodes, self.slots = nodes[order], slots[order]
        return new, taken

    def state(self) -> dict[str, np.ndarray | int]:
        return {
            "nodes": self.nodes.copy(),
            "slots": self.slots.copy(),
            "kept": self.kept.copy(),
            "capacity": self.capacity,
        }

    def restore(self, state: dict[str, np.ndarray | int]) -> None:
        self.nodes = np.asarray(state["nodes"], dtype=np.int64)
        self.slots = np.asarray(state["slots"], dtype=np.int64)
        self.kept = np.asarray(state["kept"], dtype=np.int64)
        self.capacity = int(state["capacity"])  # type: ignore[arg-type]


def rows_used(plan: RoundPlan) -> np.ndarray:
    """The logical rows a plan's steps read or write; a gossip's or another step's that
    fedsim cannot name (every node's) is refused, since only strategies whose clients hold
    nothing between rounds run on demand."""
    parts = []
    for step in plan.steps:
        if isinstance(step, Train | Merge):
            parts.append(step.nodes)
        elif isinstance(step, Average | Aggregate):
            for group in step.groups if isinstance(step, Aggregate) else (step,):
                parts += [group.sources, group.targets]
        elif isinstance(step, Push):
            parts += [step.sources, step.targets]
        else:
            raise RunError(
                f"a {type(step).__name__} step uses every node's row: run this strategy with "
                "backend.rows=all"
            )
    return np.unique(np.concatenate(parts)) if parts else np.empty(0, np.int64)


def resized(rows: torch.Tensor, capacity: int, grown: int) -> torch.Tensor:
    """``rows`` (node slots ``0 .. capacity - 1``, then the servers') with ``grown`` node
    slots: new ones (zero) between the old and the servers, or the first ``grown`` kept."""
    out = rows.new_zeros((grown + len(rows) - capacity, *rows.shape[1:]))
    kept = min(capacity, grown)
    out[:kept] = rows[:kept]
    out[grown:] = rows[capacity:]
    return out
