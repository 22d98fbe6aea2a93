"""Random-walk token SGD: one model walks the graph, and every node it visits trains it."""

from __future__ import annotations

import math
from typing import Any

import networkx as nx
import numpy as np
import scipy.sparse as sp

from fedsim import rng
from fedsim.errors import check
from fedsim.plans import Average, RoundPlan, Train
from fedsim.strategies.base import Federation, Strategy, local_work

WALKS = ("simple", "metropolis_hastings", "srrw")


class RandomWalk(Strategy):
    """Token SGD on a random walk (Johansson, Rabi and Johansson, "A randomized incremental
    subgradient method for distributed optimization in networked systems", SIAM J. Optim.
    2009; Sun, Sun and Yin, "On Markov chain gradient descent", NeurIPS 2018), with the
    self-repellent walk of Hu, Doshi and Eun ("Accelerating Distributed Stochastic
    Optimization via Self-Repellent Random Walks", ICLR 2024, arXiv 2401.09665; the zoo
    spec, section 6).

    One model, the token, walks the (static, undirected, connected) topology.  In round n
    its holder X_n takes ``local_steps`` SGD steps (or ``local_epochs``) on its own data,
    then draws the next holder X_{n+1} from the walk's kernel and sends it the model, one
    d2d message (none when the walk stays put).  The model evaluated is the token, the
    holder's row.  The token carries the model only: every holder starts a fresh optimizer
    state (the papers take plain gradient steps), and the step sizes are the run's
    ``lr_schedule``.  ``walk`` is the kernel:

    - ``simple``: a uniform neighbour, stationary distribution mu_i proportional to degree;
    - ``metropolis_hastings``: to the uniform mu, P_ij = min(1/d_i, 1/d_j) for a neighbour
      j and P_ii the rest (the spec's base chain);
    - ``srrw``: the self-repellent random walk (Doshi, Hu and Eun, ICML 2023) over that
      Metropolis-Hastings chain, K_ij[x] proportional to P_ij (x_j / mu_j)^(-alpha), x the
      walk's empirical visit measure: Hu et al.'s SA-SRRW with gamma_n = 1 / (n + 1),
      x_0 = mu (uniform, strictly positive as the walk needs) counted as one visit, so
      x_n = (mu + visits of X_1..X_n) / (n + 1).  ``alpha = 0`` is the base chain, draw
      for draw.

    Not implemented: SA-SRRW's gamma_n = (n + 1)^(-a) with a < 1 (a weighted visit
    measure; the spec leaves its exponents unverified), and what the sources leave open:
    walks on time-varying or directed graphs (refused), optimizer state that travels with
    the token, the start X_0 (``start_node``).  The visits are kept by the strategy (the spec
    says x may travel with the token or sit in per-node counters): no bytes are counted for
    them.  Its counter ``walk_tv_distance`` is the total variation distance between the
    visit frequencies of X_1..X_n and mu.
    """

    uses_topology = True
    round_unit = "hop"  # one holder trains the token and passes it on

    def __init__(
        self,
        walk: str = "simple",
        alpha: float = 0.0,
        start_node: int = 0,
        local_steps: int | None = 1,
        local_epochs: int | None = None,
    ) -> None:
        check(walk in WALKS, f"strategy.walk={walk} is not one of: {', '.join(WALKS)}")
        check(
            math.isfinite(alpha) and alpha >= 0,
            f"strategy.alpha={alpha} must be a finite number >= 0",
        )
        check(
            alpha == 0 or walk == "srrw",
            f"strategy.alpha={alpha} repels only walk=srrw, not walk={walk} (set alpha=0)",
        )
        check(start_node >= 0, f"strategy.start_node={start_node} must be an integer >= 0")
        self.walk, self.alpha, self.start_node = walk, alpha, start_node
        self.local_epochs, self.local_steps = local_work(local_epochs, local_steps)
        self._holder: int | None = None
        self._visits: np.ndarray | None = None
        self._chain: tuple[nx.Graph, sp.csr_array, np.ndarray] | None = None

    def validate(self, federation: Federation) -> None:
        num_nodes, topology = federation.num_nodes, federation.topology
        check(num_nodes >= 2, f"strategy=random_walk needs num_nodes >= 2, got {num_nodes}")
        check(
            self.start_node < num_nodes,
            f"strategy.start_node={self.start_node} must lie in 0..{num_nodes - 1}",
        )
        check(
            not topology.time_varying,
            f"strategy=random_walk needs a static topology, but {topology.name} changes per round",
        )
        check(
            not topology.graph(0).is_directed(),
            f"strategy=random_walk needs an undirected topology, but {topology.name} is directed",
        )
        topology.require("strategy=random_walk", connected=True)

    def plan(self, round_idx: int, federation: Federation) -> RoundPlan:
        chain, target = self._kernel(federation)
        if self._holder is None or self._visits is None:
            self._holder = self.start_node
            self._visits = np.zeros(federation.num_nodes, dtype=np.int64)
        holder = self._holder
        row = slice(chain.indptr[holder], chain.indptr[holder + 1])
        candidates, weights = chain.indices[row], chain.data[row]
        if self.walk == "srrw":
            ratios = visit_measure(self._visits, target)[candidates] / target[candidates]
            weights = weights * repellence(ratios, self.alpha)
        draw = rng.generator(federation.seed, rng.SAMPLING, round_idx).random()
        successor = int(candidates[pick(weights, draw)])
        steps: list[Train | Average] = [
            Train(np.array([holder]), epochs=self.local_epochs, steps=self.local_steps)
        ]
        if successor != holder:
            steps.append(Average(np.array([holder]), np.array([successor]), np.ones(1)))
        self._visits[successor] += 1
        self._holder = successor
        return RoundPlan(steps=tuple(steps))

    def _kernel(self, federation: Federation) -> tuple[sp.csr_array, np.ndarray]:
        """The walk's base kernel P and its stationary distribution mu (kept per graph)."""
        graph = federation.topology.graph(0)
        if self._chain is None or self._chain[0] is not graph:
            build = simple_walk if self.walk == "simple" else metropolis_hastings_walk
            self._chain = (graph, *build(graph))
        return self._chain[1], self._chain[2]

    def global_model_row(self, num_nodes: int) -> int | None:
        """The token's holder (the start node before the first round)."""
        return self.start_node if self._holder is None else self._holder

    def counters(self) -> dict[str, float]:
        if self._visits is None or self._chain is None or not self._visits.sum():
            return {}
        frequencies = self._visits / self._visits.sum()
        return {"walk_tv_distance": 0.5 * float(np.abs(frequencies - self._chain[2]).sum())}

    def state(self) -> dict[str, Any]:
        if self._holder is None or self._visits is None:
            return {}
        return {"holder": self._holder, "visits": self._visits.copy()}

    def restore(self, state: dict[str, Any]) -> None:
        if state:
            self._holder, self._visits = int(state["holder"]), state["visits"].copy()


def simple_walk(graph: nx.Graph) -> tuple[sp.csr_array, np.ndarray]:
    """The simple random walk's kernel, P_ij = 1/d_i for each neighbour j of i, and its
    stationary distribution mu_i = d_i / sum_k d_k."""
    adjacency = _adjacency(graph)
    degrees = adjacency.sum(axis=1)
    return sp.csr_array(sp.diags_array(1 / degrees) @ adjacency), degrees / degrees.sum()


def metropolis_hastings_walk(graph: nx.Graph) -> tuple[sp.csr_array, np.ndarray]:
    """The Metropolis-Hastings walk to the uniform distribution: a uniform neighbour j is
    proposed and accepted with probability min(1, d_i / d_j), so P_ij = min(1/d_i, 1/d_j)
    and P_ii = sum_j (1/d_i - P_ij) (zero entries left out); mu = 1/n."""
    adjacency = _adjacency(graph).tocoo()
    num_nodes = adjacency.shape[0]
    rows, columns = adjacency.row, adjacency.col
    inverse = 1 / np.bincount(rows, minlength=num_nodes)
    moves = np.minimum(inverse[rows], inverse[columns])
    stays = np.bincount(rows, weights=inverse[rows] - moves, minlength=num_nodes)
    everyone = np.arange(num_nodes)
    kernel = sp.csr_array(
        (
            np.concatenate([moves, stays]),
            (np.concatenate([rows, everyone]), np.concatenate([columns, everyone])),
        ),
        shape=(num_nodes, num_nodes),
    )
    kernel.eliminate_zeros()
    kernel.sort_indices()
    return kernel, np.full(num_nodes, 1 / num_nodes)


def _adjacency(graph: nx.Graph) -> sp.csr_array:
    """The 0/1 adjacency of ``graph`` on nodes 0..n-1, without self-loops."""
    adjacency = nx.to_scipy_sparse_array(
        graph, nodelist=range(graph.number_of_nodes()), weight=None, dtype=np.float64
    )
    adjacency.setdiag(0)
    adjacency.eliminate_zeros()
    return sp.csr_array(adjacency)


def visit_measure(visits: np.ndarray, target: np.ndarray) -> np.ndarray:
    """x_n = (mu + visits of X_1..X_n) / (n + 1), ``visits`` the counts and ``target`` mu:
    the walk's empirical measure with mu as its first visit (SA-SRRW's x_0 = mu and
    gamma_n = 1 / (n + 1)), so every entry stays > 0."""
    return (target + visits) / (visits.sum() + 1)


def repellence(ratios: np.ndarray, alpha: float) -> np.ndarray:
    """The self-repellent factors (r_j / m)^(-alpha) of one row's candidates j, ``ratios``
    r = x / mu and m their least: the SRRW kernel's row is P_ij times them, up to its sum
    (dividing by m keeps every factor <= 1, so a large alpha cannot overflow; with
    alpha = 0 every factor is exactly 1)."""
    return (ratios / ratios.min()) ** -alpha


def self_repellent_kernel(
    base: sp.csr_array, visit_measure: np.ndarray, target: np.ndarray, alpha: float
) -> sp.csr_array:
    """The SRRW kernel K[x]_ij = P_ij (x_j/mu_j)^(-alpha) / sum_k P_ik (x_k/mu_k)^(-alpha)
    (Doshi, Hu and Eun, ICML 2023) of base kernel ``base`` (P, no empty row), target
    ``target`` (mu) and visit measure ``visit_measure`` (x, every entry > 0), row by row as
    :class:`RandomWalk` draws it (for analysis and tests)."""
    kernel = sp.csr_array(base, copy=True)
    ratio = visit_measure / target
    for node in range(kernel.shape[0]):
        row = slice(kernel.indptr[node], kernel.indptr[node + 1])
        weights = kernel.data[row] * repellence(ratio[kernel.indices[row]], alpha)
        kernel.data[row] = weights / weights.sum()
    return kernel


def pick(weights: np.ndarray, draw: float) -> int:
    """The position chosen with probability proportional to ``weights`` by a uniform ``draw``
    in [0, 1) (inverse CDF; never a zero weight)."""
    cumulative = np.cumsum(weights)
    position = int(np.searchsorted(cumulative, draw * cumulative[-1], side="right"))
    return min(position, int(np.flatnonzero(weights)[-1]))
