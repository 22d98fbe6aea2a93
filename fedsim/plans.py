"""Round plans: what a strategy asks the engine to do in one round, as pure data.

Rows of the federation tensor are the n nodes (0 .. n-1) followed by the strategy's
servers (n, n+1, ...).  A plan is an ordered tuple of steps; the engine executes them in
order and counts the messages each step implies.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

if TYPE_CHECKING:
    from fedsim.privacy.noise import NoisyStep


@dataclass(frozen=True, eq=False)
class Train:
    """``nodes`` run local SGD: ``epochs`` passes over their data, or ``steps`` mini-batches.

    ``fresh_optimizer`` resets their optimizer state (momentum) first, as a client that
    builds a new optimizer every round does.  With ``privacy`` every step is a noisy one:
    per-example clipping and the noise it gives (set by the engine, never by a strategy).
    """

    nodes: np.ndarray
    epochs: int | None = None
    steps: int | None = None
    fresh_optimizer: bool = True
    privacy: NoisyStep | None = None


@dataclass(frozen=True, eq=False)
class Gossip:
    """Every node takes its row of ``W @ X[:n]``: j sends its model to each i with W[i, j] != 0."""

    weights: sp.csr_array


@dataclass(frozen=True, eq=False)
class Average:
    """Each source sends its row to each target; each target becomes ``sum_k w[k] X[sources[k]]``.

    A broadcast is an average with one source.  Weights sum to one.
    """

    sources: np.ndarray
    targets: np.ndarray
    weights: np.ndarray


@dataclass(frozen=True, eq=False)
class Aggregate:
    """Several averages taken at once: every group reads the rows as they were before the step,
    then all write their targets (independent aggregators whose sources and targets overlap)."""

    groups: tuple[Average, ...]


@dataclass(frozen=True, eq=False)
class Push:
    """Message k puts ``sources[k]``'s current row into ``targets[k]``'s buffer with weight
    ``weights[k]`` (1 for a plain mean, the sender's age for an age-weighted one)."""

    sources: np.ndarray
    targets: np.ndarray
    weights: np.ndarray


@dataclass(frozen=True, eq=False)
class Merge:
    """Each of ``nodes`` becomes ``s X[i] + (1 - s) B[i]`` with ``s = self_weights[i]`` and
    ``B[i]`` the weighted mean of its buffer, which is then emptied."""

    nodes: np.ndarray
    self_weights: np.ndarray


Step = Train | Gossip | Average | Aggregate | Push | Merge


@dataclass(frozen=True, eq=False)
class Traffic:
    """What a protocol sent in one round, counted by the protocol itself.

    ``model_messages[i]`` is the number of model messages row i sent; ``control_bytes[kind][i]``
    the bytes of control traffic of that kind (piggybacked views, pings and pongs, membership
    advertisements) it sent; ``aggregations[i]`` how many averages row i computed.
    """

    model_messages: np.ndarray
    control_bytes: dict[str, np.ndarray]
    aggregations: np.ndarray


@dataclass(frozen=True, eq=False)
class RoundPlan:
    """The steps of one round, executed in order.

    Event-driven protocols (MoDeST, gossip learning) also give their own ``traffic`` and the
    simulated time ``finished_at`` at which the round completed; for other plans the engine
    derives both from the steps.  ``stalled`` says why a protocol can make no further
    progress (the run then stops after this plan).
    """

    steps: tuple[Step, ...]
    traffic: Traffic | None = None
    finished_at: float | None = None
    stalled: str | None = None


def messages_sent(step: Step, num_rows: int) -> np.ndarray:
    """Number of model messages each row sends in ``step`` (a (num_rows,) int array)."""
    if isinstance(step, Gossip):
        coo = step.weights.tocoo()
        off_diagonal = (coo.row != coo.col) & (coo.data != 0)
        return np.bincount(coo.col[off_diagonal], minlength=num_rows)
    if isinstance(step, Average):
        per_source = len(step.targets) - np.isin(step.sources, step.targets).astype(np.int64)
        return np.bincount(step.sources, weights=per_source, minlength=num_rows).astype(np.int64)
    if isinstance(step, Aggregate):
        return sum((messages_sent(group, num_rows) for group in step.groups), _none(num_rows))
    if isinstance(step, Push):
        sent = step.sources[step.sources != step.targets]
        return np.bincount(sent, minlength=num_rows).astype(np.int64)
    return _none(num_rows)


def aggregations(step: Step, num_rows: int) -> np.ndarray:
    """How many averages each row computes in ``step``: a row that combines models it received
    (a gossip row with neighbours, a target of an average over several sources)."""
    if isinstance(step, Gossip):
        coo = step.weights.tocoo()
        receives = (coo.row != coo.col) & (coo.data != 0)
        counts = np.zeros(num_rows, dtype=np.int64)
        counts[np.unique(coo.row[receives])] = 1
        return counts
    if isinstance(step, Average) and len(step.sources) > 1:
        return np.bincount(step.targets, minlength=num_rows).astype(np.int64)
    if isinstance(step, Aggregate):
        return sum((aggregations(group, num_rows) for group in step.groups), _none(num_rows))
    if isinstance(step, Merge):
        return np.bincount(step.nodes, minlength=num_rows).astype(np.int64)
    return _none(num_rows)


def _none(num_rows: int) -> np.ndarray:
    return np.zeros(num_rows, dtype=np.int64)


def channel(step: Step, num_nodes: int) -> str | None:
    """Which link a step's messages use: ``d2d`` between nodes, ``uplink`` node to server,
    ``downlink`` server to node (None for training)."""
    if isinstance(step, Gossip | Aggregate | Push):
        return "d2d"
    if isinstance(step, Average):
        if (step.sources >= num_nodes).all():
            return "downlink"
        if (step.targets >= num_nodes).all():
            return "uplink"
        return "d2d"
    return None
