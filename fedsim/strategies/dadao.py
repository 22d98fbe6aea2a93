"""DADAO: decoupled accelerated decentralized asynchronous optimization (Nabli and Oyallon,
ICML 2023), with gradient steps and edge gossip as two Poisson processes on the simulated clock."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import networkx as nx
import numpy as np
import scipy.linalg
import torch

from fedsim import rng
from fedsim.errors import check
from fedsim.plans import Aggregate, Average, RoundPlan, Train
from fedsim.strategies.base import Federation, Strategy
from fedsim.training.transforms import GradientTransform, Slots

# The six per-node vectors (X is the model); the two scratch slots of an edge event.
X_TILDE, Y, Y_TILDE, Z, Z_TILDE = "x_tilde", "y", "y_tilde", "z", "z_tilde"
VARIABLES = ("params", X_TILDE, Y, Y_TILDE, Z, Z_TILDE)  # the order of the ODE's matrix
MESSAGE = "y_plus_z"  # what a node sends on an edge: Y + Z
DIFFERENCE = "message_difference"  # its own message minus the one it received
GRADIENT = "dadao_gradient"  # the loss gradient of the node's last gradient event


@dataclass(frozen=True)
class Constants:
    """The constants of DADAO's ODE and jumps for strong convexity ``mu``, smoothness ``L``
    and chi1* = chi1 / lambda_mix (the official code's ``DADAO_optimizer.initialize``)."""

    mu: float
    L: float
    chi1_star: float

    @property
    def nu(self) -> float:
        return self.mu / 2

    @property
    def ratio(self) -> float:
        """sqrt(nu / L)."""
        return float(np.sqrt(self.nu / self.L))

    def ode_matrix(self) -> np.ndarray:
        """M of d(X, X~, Y, Y~, Z, Z~)/dt = M (X, X~, Y, Y~, Z, Z~), the same at every node."""
        eta = eta_tilde = alpha_tilde = self.ratio / 8
        alpha, theta = self.ratio / 4, 1 / (2 * self.ratio)
        matrix = np.zeros((6, 6))
        matrix[0, :2] = -eta, eta
        matrix[1, :2] = eta_tilde, -eta_tilde
        matrix[2, 2:4] = -alpha, alpha
        matrix[3, [1, 2, 4]] = -theta * self.nu, -theta, -theta
        matrix[4, 4:] = -alpha, alpha
        matrix[5, 4:] = alpha_tilde, -alpha_tilde
        return matrix

    @property
    def beta(self) -> float:
        return 0.5

    @property
    def beta_tilde(self) -> float:
        return 2 * self.chi1_star / self.ratio

    @property
    def gamma(self) -> float:
        return 1 / (4 * self.L)

    @property
    def gamma_tilde(self) -> float:
        return 1 / (4 * np.sqrt(self.L * self.nu))

    @property
    def delta_sum(self) -> float:
        """delta + delta~ = sqrt(nu / L) / 4 + 1."""
        return self.ratio / 4 + 1


@dataclass(frozen=True)
class LinearCombination:
    """A target row's update ``keep * row + sum_k w_k source_k`` (a stateless server
    optimizer), the seam by which plans write linear combinations of a node's slots."""

    keep: float

    def init(self, rows: torch.Tensor) -> dict[str, torch.Tensor]:
        return {}

    def update(
        self, rows: torch.Tensor, average: torch.Tensor, state: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return self.keep * rows + average, state


def combine(node: int, source: str, target: str, weight: float, keep: float) -> Average:
    """Node ``node``'s ``target`` becomes ``keep * target + weight * source`` (nothing sent)."""
    index = np.array([node])
    return Average(index, index, np.array([weight]), LinearCombination(keep), source, target)


def catch_up(nodes: np.ndarray, elapsed: np.ndarray, matrix: np.ndarray) -> list[Aggregate]:
    """The steps that move ``nodes`` along the ODE for their ``elapsed`` times: each node's six
    vectors become exp(M elapsed) times them.  An aggregate reads every row before it writes,
    and no two of its groups write one slot of one node, so each is one simultaneous update:
    Y and Y~ first (from the old X, X~, Z, Z~, which Y and Y~ do not drive), then X, X~ and
    Z, Z~ (closed 2 x 2 systems)."""
    moving = elapsed > 0
    nodes, elapsed = nodes[moving], elapsed[moving]
    if not len(nodes):
        return []
    flows = [scipy.linalg.expm(matrix * dt) for dt in elapsed]
    pairs: list[list[Average]] = [[] for _ in range(6)]
    for node, flow in zip(nodes.tolist(), flows, strict=True):
        pairs[0] += [combine(node, Y_TILDE, Y, flow[2, 3], flow[2, 2])]
        pairs[0] += [combine(node, Y, Y_TILDE, flow[3, 2], flow[3, 3])]
        for step, column in enumerate((0, 1, 4, 5), start=1):
            pairs[step] += [combine(node, VARIABLES[column], Y, flow[2, column], 1.0)]
            pairs[step] += [combine(node, VARIABLES[column], Y_TILDE, flow[3, column], 1.0)]
        pairs[5] += [
            combine(node, X_TILDE, "params", flow[0, 1], flow[0, 0]),
            combine(node, "params", X_TILDE, flow[1, 0], flow[1, 1]),
            combine(node, Z_TILDE, Z, flow[4, 5], flow[4, 4]),
            combine(node, Z, Z_TILDE, flow[5, 4], flow[5, 5]),
        ]
    return [Aggregate(tuple(groups)) for groups in pairs]


def edge_exchange(i: int, j: int, constants: Constants) -> list[Aggregate]:
    """The communication event on edge (i, j) after both caught up: each sends Y + Z (one
    message each way), m = (Y_i + Z_i) - (Y_j + Z_j), Z_i -= beta m, Z~_i -= beta~ m,
    Z_j += beta m, Z~_j += beta~ m."""
    ends = (i, j)
    message = [combine(k, Y, MESSAGE, 1.0, 0.0) for k in ends]
    message_plus_z = [combine(k, Z, MESSAGE, 1.0, 1.0) for k in ends]
    exchange = [
        Average(
            np.array([own, other]),
            np.array([own]),
            np.array([1.0, -1.0]),
            None,
            MESSAGE,
            DIFFERENCE,
        )
        for own, other in (ends, ends[::-1])
    ]
    jump = [
        combine(k, DIFFERENCE, slot, -step, 1.0)
        for k in ends
        for slot, step in ((Z, constants.beta), (Z_TILDE, constants.beta_tilde))
    ]
    return [Aggregate(tuple(groups)) for groups in (message, message_plus_z, exchange, jump)]


@dataclass(frozen=True)
class GradientJump(GradientTransform):
    """DADAO's gradient event at a node (one local step): with r = grad f_i(X) + l2 X - nu X
    - Y~ at the caught-up X, ``X -= gamma r``, ``X~ -= gamma~ r``, ``Y~ += (delta + delta~)
    r``.  The model's step is set in :meth:`finish`, so the local optimizer's learning rate
    and weight decay play no part (the ridge term is ``l2``)."""

    constants: Constants
    l2: float
    slots = (GRADIENT, X_TILDE, Y_TILDE)

    def __call__(
        self, grads: torch.Tensor, params: torch.Tensor, start: torch.Tensor, slots: Slots
    ) -> torch.Tensor:
        slots[GRADIENT].copy_(grads)
        return grads

    def finish(
        self,
        params: torch.Tensor,
        start: torch.Tensor,
        steps: torch.Tensor,
        lr: float | torch.Tensor,
        slots: Slots,
    ) -> None:
        constants = self.constants
        step = slots[GRADIENT] + (self.l2 - constants.nu) * start - slots[Y_TILDE]
        params.copy_(start - constants.gamma * step)
        slots[X_TILDE].sub_(constants.gamma_tilde * step)
        slots[Y_TILDE].add_(constants.delta_sum * step)


def edge_laplacian(graph: nx.Graph) -> np.ndarray:
    """The graph's Laplacian divided by its edge count: weighted by uniform edge probabilities."""
    laplacian = nx.laplacian_matrix(graph, nodelist=range(len(graph))).toarray().astype(float)
    return laplacian / graph.number_of_edges()


def chi1(graph: nx.Graph) -> float:
    """chi1 = 1 / lambda_2 of :func:`edge_laplacian` (the official code's
    ``compute_spectral_quantities``)."""
    return float(1 / np.linalg.eigvalsh(edge_laplacian(graph))[1])


def chi2(graph: nx.Graph) -> float:
    """chi2 = max over edges (i, j) of (e_i - e_j)^T L^+ (e_i - e_j) / 2, L the
    :func:`edge_laplacian` (the official code's ``compute_graph_resistance``)."""
    inverse = np.linalg.pinv(edge_laplacian(graph))
    diagonal = np.diag(inverse)
    return float(max((diagonal[i] + diagonal[j] - 2 * inverse[i, j]) / 2 for i, j in graph.edges()))


class DADAO(Strategy):
    """DADAO (Nabli and Oyallon, "DADAO: Decoupled Accelerated Decentralized Asynchronous
    Optimization", ICML 2023, arXiv 2208.00779), as the official code (AdelNabli/DADAO,
    ``optimizers.py``) runs it.

    Each node keeps X (its model), X~, Y, Y~, Z, Z~ (per-row slots, zero at first).  Gradient
    events come as a Poisson process of rate ``gradient_rate`` (default: one per node per
    unit of time), each at a node drawn uniformly; communication events as an independent one
    of rate ``communication_rate`` (default sqrt(2 chi1 chi2), the official code's choice:
    well below it the iterates can diverge), each on an edge of the graph drawn uniformly.
    Between its events a node's six vectors follow a linear ODE, applied lazily (exp(M dt),
    at its next event and at the end of every round, so evaluation sees every node at the
    round's end); a gradient event takes one local gradient (:class:`GradientJump`), an edge
    event sends Y + Z each way (2 d floats) and moves Z, Z~.  Sum_i Z_i and sum_i Z~_i stay 0.

    ``strong_convexity`` and ``smoothness`` (mu, L) are those of f_i plus the ``l2`` ridge
    term; chi1 and chi2 are taken from the graph (over one period of a time-varying one).  A
    round is ``period`` units of simulated time.  DADAO is a method for strongly convex
    problems (logistic or ridge regression), with full local gradients (a batch size at least
    each node's data: two gradient events of a node in one round draw the same mini-batch).
    Message transforms act on models, not on Y + Z: a compressor is refused, and an attack
    (which fedsim cannot show a strategy) would rewrite its nodes' local reads of X instead
    of their messages, so DADAO is not meant to run with one.
    """

    uses_topology = True
    round_unit = "period"
    assumes_sgd: ClassVar[bool] = True

    def __init__(
        self,
        strong_convexity: float = 1.0,
        smoothness: float = 1.0,
        l2: float = 0.0,
        gradient_rate: float | None = None,
        communication_rate: float | None = None,
        period: float = 1.0,
    ) -> None:
        check(
            0 < strong_convexity <= smoothness < float("inf"),
            f"strategy.strong_convexity={strong_convexity} and strategy.smoothness="
            f"{smoothness} must satisfy 0 < strong_convexity <= smoothness < inf",
        )
        check(0 <= l2 < float("inf"), f"strategy.l2={l2} must be a finite number >= 0")
        for name, value in (
            ("gradient_rate", gradient_rate),
            ("communication_rate", communication_rate),
            ("period", period),
        ):
            check(
                value is None or 0 < value < float("inf"),
                f"strategy.{name}={value} must be a finite number > 0",
            )
        self.mu, self.L, self.l2 = strong_convexity, smoothness, l2
        self.gradient_rate, self.communication_rate, self.period = (
            gradient_rate,
            communication_rate,
            period,
        )
        self.counts = {"gradient_events": 0, "communication_events": 0}
        self._constants: tuple[Constants, float] | None = None

    def validate(self, federation: Federation) -> None:
        check(
            federation.num_nodes >= 2,
            f"strategy=dadao needs num_nodes >= 2, got {federation.num_nodes}",
        )
        check(
            federation.momentum == 0,
            f"strategy=dadao takes plain gradient steps; "
            f"optimizer.momentum={federation.momentum} must be 0",
        )
        federation.topology.require("strategy=dadao", connected=True)

    def constants(self, federation: Federation) -> tuple[Constants, float]:
        """The constants and the communication rate (default sqrt(2 chi1 chi2), as the
        official ``main.py`` sets it), chi1 and chi2 of the (union over one period of the)
        graph."""
        if self._constants is None:
            graph = nx.Graph(federation.topology.connectivity_graph())
            graph.remove_edges_from(list(nx.selfloop_edges(graph)))
            rate = self.communication_rate or float(np.sqrt(2 * chi1(graph) * chi2(graph)))
            self._constants = (Constants(self.mu, self.L, chi1(graph) / rate), rate)
        return self._constants

    def events(
        self, round_idx: int, federation: Federation
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The round's events in time order: their times, whether each is a gradient event,
        and its node (gradient) or edge's two ends (communication; -1 where none)."""
        num_nodes, start = federation.num_nodes, round_idx * self.period
        generator = rng.generator(federation.seed, rng.SAMPLING, round_idx)
        gradient_rate = self.gradient_rate or float(num_nodes)
        communication_rate = self.communication_rate or self.constants(federation)[1]
        gradients = generator.poisson(gradient_rate * self.period)
        communications = generator.poisson(communication_rate * self.period)
        times = start + generator.uniform(0, self.period, gradients + communications)
        ends = np.full((gradients + communications, 2), -1, dtype=np.int64)
        ends[:gradients, 0] = generator.integers(0, num_nodes, gradients)
        graph = federation.topology.graph(round_idx)
        edges = sorted((min(e), max(e)) for e in graph.edges() if e[0] != e[1])
        is_gradient = np.arange(gradients + communications) < gradients
        if edges:
            ends[gradients:] = np.array(edges)[generator.integers(0, len(edges), communications)]
        else:  # a time-varying graph without edges this round: nobody can gossip
            times, ends, is_gradient = times[:gradients], ends[:gradients], is_gradient[:gradients]
        order = np.argsort(times, kind="stable")
        return times[order], is_gradient[order], ends[order]

    def plan(self, round_idx: int, federation: Federation) -> RoundPlan:
        check(  # the sizes of compressed links are known from the first plan on (at build)
            not federation.link_bytes,
            "strategy=dadao sends Y + Z, not the model, which no compressor encodes; "
            "use compression=none",
        )
        constants = self.constants(federation)[0]
        matrix, jump = constants.ode_matrix(), GradientJump(constants, self.l2)
        start = round_idx * self.period
        last = np.full(federation.num_nodes, start)  # every node caught up at a round's end
        steps: list = []
        for time, is_gradient, ends in zip(*self.events(round_idx, federation), strict=True):
            nodes = ends[:1] if is_gradient else ends
            steps += catch_up(nodes, time - last[nodes], matrix)
            last[nodes] = time
            if is_gradient:
                steps.append(Train(nodes, steps=1, fresh_optimizer=True, transforms=(jump,)))
                self.counts["gradient_events"] += 1
            else:
                steps += edge_exchange(int(ends[0]), int(ends[1]), constants)
                self.counts["communication_events"] += 1
        everyone = np.arange(federation.num_nodes)
        steps += catch_up(everyone, start + self.period - last, matrix)
        return RoundPlan(steps=tuple(steps), finished_at=start + self.period)

    def counters(self) -> dict[str, float]:
        return {name: float(count) for name, count in self.counts.items()}

    def state(self) -> dict[str, Any]:
        return dict(self.counts)

    def restore(self, state: dict[str, Any]) -> None:
        if state:
            self.counts = {name: int(count) for name, count in state.items()}
