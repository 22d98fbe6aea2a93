"""Epidemic Learning: every round each node trains and sends its model to s random others."""

from __future__ import annotations

import networkx as nx
import numpy as np
import scipy.sparse as sp

from fedsim import rng
from fedsim.errors import check
from fedsim.plans import Gossip, RoundPlan, Train
from fedsim.strategies.base import Federation, Strategy, local_work

VARIANTS = ("oracle", "local")
GRAPH_SEEDS = 2**32  # networkx's seed for a round's graph is drawn below this


class EpidemicLearning(Strategy):
    """Epidemic Learning (de Vos, Farhadkhani, Guerraoui, Kermarrec, Pires and Sharma,
    "Epidemic Learning: Boosting Decentralized Learning with Randomized Communication",
    NeurIPS 2023; the zoo spec, section 5).

    Every round every node trains, sends its model to ``fanout`` (s) others drawn afresh,
    and replaces its model by the uniform average of its own and every model it received,
    ``x_i <- (x_i + sum_{j in R_i} x_j) / (1 + |R_i|)``.  ``variant=oracle`` (EL-Oracle)
    draws a random s-regular graph each round (networkx's ``random_regular_graph``,
    undirected: every edge carries a model each way, so every node sends to and receives
    from exactly s others; n s must be even); ``variant=local`` (EL-Local) lets every node
    pick s distinct others uniformly, so how many models a node receives varies (s on
    average).  Both send n s models per round.  The peers depend on (seed, round) alone;
    no topology is used.  Rounds are synchronous, as in D-PSGD.
    """

    barrier = True

    def __init__(
        self,
        fanout: int = 7,
        variant: str = "local",
        local_epochs: int | None = 1,
        local_steps: int | None = None,
    ) -> None:
        check(fanout >= 1, f"strategy.fanout={fanout} must be an integer >= 1")
        check(
            variant in VARIANTS, f"strategy.variant={variant} is not one of: {', '.join(VARIANTS)}"
        )
        self.fanout, self.variant = fanout, variant
        self.local_epochs, self.local_steps = local_work(local_epochs, local_steps)

    def validate(self, federation: Federation) -> None:
        num_nodes = federation.num_nodes
        check(
            self.fanout <= num_nodes - 1,
            f"strategy.fanout={self.fanout} must be <= num_nodes - 1 = {num_nodes - 1}",
        )
        check(
            self.variant == "local" or num_nodes * self.fanout % 2 == 0,
            f"strategy.fanout={self.fanout} with num_nodes={num_nodes}: strategy.variant=oracle "
            "needs num_nodes * fanout even (an s-regular graph); change either, or use "
            "strategy.variant=local",
        )

    def plan(self, round_idx: int, federation: Federation) -> RoundPlan:
        num_nodes = federation.num_nodes
        generator = rng.generator(federation.seed, rng.SAMPLING, round_idx)
        senders, receivers = self.sends(generator, num_nodes)
        train = Train(
            np.arange(num_nodes),
            epochs=self.local_epochs,
            steps=self.local_steps,
            fresh_optimizer=False,
        )
        return RoundPlan(
            steps=(train, Gossip(average_with_received(senders, receivers, num_nodes)))
        )

    def sends(
        self, generator: np.random.Generator, num_nodes: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """(sender, receiver) of every model sent this round."""
        if self.variant == "local":
            return draw_peers(generator, np.full(num_nodes, self.fanout))
        seed = int(generator.integers(GRAPH_SEEDS))
        graph = nx.random_regular_graph(self.fanout, num_nodes, seed=seed)
        ends = np.array(graph.edges, dtype=np.int64).reshape(-1, 2)
        return np.concatenate([ends[:, 0], ends[:, 1]]), np.concatenate([ends[:, 1], ends[:, 0]])


def draw_peers(generator: np.random.Generator, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(node, peer) pairs in which every node i of ``len(counts)`` draws ``counts[i]``
    distinct peers uniformly among the others.

    Robert Floyd's sampling of ``max(counts)`` of the n - 1 others, vectorised over the
    nodes (Bentley and Floyd, "A sample of brilliance", CACM 1987); a node that needs fewer
    keeps a uniformly random part of its sample.
    """
    num_nodes, width = len(counts), int(np.max(counts, initial=0))
    others = num_nodes - 1
    chosen = np.empty((num_nodes, width), dtype=np.int64)
    for column, top in enumerate(range(others - width, others)):
        pick = generator.integers(0, top + 1, size=num_nodes)
        taken = (chosen[:, :column] == pick[:, None]).any(axis=1)
        chosen[:, column] = np.where(taken, top, pick)
    nodes = np.repeat(np.arange(num_nodes)[:, None], width, axis=1)
    peers = chosen + (chosen >= nodes)  # skip the node itself
    kept = generator.random((num_nodes, width)).argsort(axis=1).argsort(axis=1) < counts[:, None]
    return nodes[kept], peers[kept]


def average_with_received(
    senders: np.ndarray, receivers: np.ndarray, num_nodes: int
) -> sp.csr_array:
    """The row-stochastic W (row i: what node i receives) by which every node takes the
    uniform average of its own model and each model sent to it: ``W[i, j] = 1 / (1 +
    received_i)`` for every sender j to i and for i itself (one message per non-zero off
    the diagonal)."""
    received = np.bincount(receivers, minlength=num_nodes)
    everyone = np.arange(num_nodes)
    rows = np.concatenate([receivers, everyone])
    columns = np.concatenate([senders, everyone])
    return sp.csr_array((1.0 / (1 + received[rows]), (rows, columns)), shape=(num_nodes,) * 2)
