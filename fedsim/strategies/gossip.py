"""Gossip learning on a graph, driven by ticks: train, push to neighbours, merge a full buffer."""

from __future__ import annotations

from typing import Any

import networkx as nx
import numpy as np
import scipy.sparse as sp

from fedsim import rng
from fedsim.errors import check
from fedsim.plans import Merge, Push, RoundPlan, Train
from fedsim.strategies.base import Federation, Strategy
from fedsim.training.schedule import samples_in_steps

MERGES = ("mean", "age_weighted")
NO_AGE = 1e-9  # the weight of a model nobody trained yet: equal weights among such models


class EventGossip(Strategy):
    """Gossip learning as the vanishing-variance paper's simulators run it (Tian et al.,
    arXiv 2404.04616; DFL2 / DFL_torch), one round per tick.

    Each node trains ``local_steps`` mini-batches every Uniform{``train_every_min`` ..
    ``train_every_max``} ticks (first at ``first_train``), then pushes its model to all its
    neighbours (or ``fanout`` of them, drawn at random).  Once a node's buffer holds
    ``buffer_size`` models (default: its degree; repeats from one sender count), it merges
    ``θ <- s θ + (1 - s) mean(buffer)`` with ``s = self_weight`` and empties the buffer; all
    trainers of a tick train and push before anyone merges.  ``merge="age_weighted"`` weighs
    itself and every received model by its age (samples trained, the maximum taken at each
    merge), as in Ormándi et al.'s gossip learning.  The ``aggregator`` finishes each merge
    (``aggregator=variance_corrected``); optimizer state survives merges.
    """

    uses_topology = True
    buffers_messages = True
    round_unit = "tick"

    def __init__(
        self,
        train_every_min: int = 8,
        train_every_max: int = 12,
        first_train: int = 0,
        local_steps: int = 1,
        fanout: int | None = None,
        buffer_size: int | None = None,
        self_weight: float = 0.5,
        merge: str = "mean",
        tick_s: float = 1.0,
    ) -> None:
        check(
            1 <= train_every_min <= train_every_max,
            f"strategy.train_every_min={train_every_min} and strategy.train_every_max="
            f"{train_every_max} must satisfy 1 <= min <= max",
        )
        for name, value, low in (
            ("first_train", first_train, 0),
            ("local_steps", local_steps, 1),
            ("fanout", fanout, 1),
            ("buffer_size", buffer_size, 1),
        ):
            check(value is None or value >= low, f"strategy.{name}={value} must be >= {low}")
        check(0 <= self_weight < 1, f"strategy.self_weight={self_weight} must lie in [0, 1)")
        check(merge in MERGES, f"strategy.merge={merge} is not one of: {', '.join(MERGES)}")
        check(tick_s > 0, f"strategy.tick_s={tick_s} must be > 0")
        self.train_every = (train_every_min, train_every_max)
        self.first_train, self.local_steps, self.fanout = first_train, local_steps, fanout
        self.buffer_size, self.self_weight, self.merge = buffer_size, self_weight, merge
        self.tick_s = tick_s
        self._state: dict[str, np.ndarray] | None = None
        self._graph: tuple[nx.Graph, sp.csr_array, np.ndarray] | None = None

    def plan(self, round_idx: int, federation: Federation) -> RoundPlan:
        num_nodes = federation.num_nodes
        if self._state is None:
            self._state = {
                "next_train": np.full(num_nodes, self.first_train, dtype=np.int64),
                "age": np.zeros(num_nodes),
                "received": np.zeros(num_nodes, dtype=np.int64),
                "received_age": np.zeros(num_nodes),
                "received_age_max": np.zeros(num_nodes),
            }
        state = self._state
        adjacency, in_degree = self.neighbours(round_idx, federation)
        trainers = np.flatnonzero(state["next_train"] <= round_idx)
        draws = rng.generator(federation.seed, rng.SAMPLING, round_idx).integers(
            self.train_every[0], self.train_every[1] + 1, size=num_nodes
        )
        state["next_train"][trainers] += draws[trainers]
        state["age"][trainers] += samples_in_steps(
            federation.num_examples[trainers], self.local_steps, federation.batch_size
        )
        sources, targets = self._pushes(trainers, adjacency, round_idx, federation.seed)
        weights = np.ones(len(sources))
        if self.merge == "age_weighted":
            weights = np.maximum(state["age"][sources], NO_AGE)
        np.add.at(state["received"], targets, 1)
        np.add.at(state["received_age"], targets, weights)
        np.maximum.at(state["received_age_max"], targets, state["age"][sources])
        buffer_sizes = self.buffer_size or np.maximum(in_degree, 1)
        merging = np.flatnonzero(state["received"] >= buffer_sizes)
        steps: list = []
        if len(trainers):
            steps.append(Train(trainers, steps=self.local_steps, fresh_optimizer=False))
        if len(sources):
            steps.append(Push(sources, targets, weights))
        if len(merging):
            steps.append(Merge(merging, self._self_weights(merging)))
            state["age"][merging] = np.maximum(
                state["age"][merging], state["received_age_max"][merging]
            )
            for name in ("received", "received_age", "received_age_max"):
                state[name][merging] = 0
        return RoundPlan(steps=tuple(steps), finished_at=(round_idx + 1) * self.tick_s)

    def neighbours(self, round_idx: int, federation: Federation) -> tuple[sp.csr_array, np.ndarray]:
        """The adjacency of this tick's graph (row i: i's out-neighbours) and each node's
        in-degree (how many push to it); the last graph's is kept."""
        graph = federation.topology.graph(round_idx)
        if self._graph is None or self._graph[0] is not graph:
            adjacency = nx.to_scipy_sparse_array(graph, nodelist=range(federation.num_nodes))
            adjacency.setdiag(0)
            adjacency.eliminate_zeros()
            adjacency = sp.csr_array(adjacency)
            in_degree = np.bincount(adjacency.indices, minlength=federation.num_nodes)
            self._graph = (graph, adjacency, in_degree)
        return self._graph[1], self._graph[2]

    def _pushes(
        self, trainers: np.ndarray, adjacency: sp.csr_array, round_idx: int, seed: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """(sender, receiver) of every push: to all neighbours, or ``fanout`` random ones."""
        block = adjacency[trainers]
        degrees = np.diff(block.indptr)
        if self.fanout is None or (degrees <= self.fanout).all():
            return np.repeat(trainers, degrees).astype(np.int64), block.indices.astype(np.int64)
        sources, targets = [], []
        for node, peers in zip(trainers, np.split(block.indices, block.indptr[1:-1]), strict=True):
            if self.fanout < len(peers):
                generator = rng.generator(seed, rng.SAMPLING, round_idx, node)
                peers = np.sort(generator.choice(peers, self.fanout, replace=False))
            sources.append(np.full(len(peers), node))
            targets.append(peers)
        return np.concatenate(sources).astype(np.int64), np.concatenate(targets).astype(np.int64)

    def _self_weights(self, merging: np.ndarray) -> np.ndarray:
        if self.merge == "mean":
            return np.full(len(merging), self.self_weight)
        own = np.maximum(self._state["age"][merging], NO_AGE)
        return own / (own + self._state["received_age"][merging])

    def state(self) -> dict[str, Any]:
        return {} if self._state is None else {k: v.copy() for k, v in self._state.items()}

    def restore(self, state: dict[str, Any]) -> None:
        if state:
            self._state = {name: value.copy() for name, value in state.items()}
