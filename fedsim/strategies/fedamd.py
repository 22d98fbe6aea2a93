"""FedAMD: partial participation where each sampled client is an anchor or a miner."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.optimize
import torch

from fedsim import rng
from fedsim.errors import check
from fedsim.plans import Average, RoundPlan, Step, Train
from fedsim.server_optimizers import ServerMomentum
from fedsim.strategies.base import Federation
from fedsim.strategies.fedavg import FedAvg
from fedsim.strategies.scaffold import Accumulate
from fedsim.training.schedule import samples_in_steps
from fedsim.training.transforms import GradientAt, GradientTransform, PerExampleTransform, Slots

BULLSEYE = "bullseye"  # b_m: client m's last full-batch gradient (the server keeps them all)
GRADIENT_SUM = "anchor_gradient"  # an anchor's full-batch gradient, summed batch by batch
BULLSEYE_CHANGE = "bullseye_change"  # b_m new - b_m old, what the server adds to its target
TARGET = "global_target"  # at the server: g = (1/M) sum over all M clients of b_m
DIRECTION = "sarah_direction"  # a miner's v_k (g_t as it arrives)
PREVIOUS_POINT = "previous_point"  # a miner's y_{k-1}
CURRENT_GRADIENT = "current_gradient"  # a miner's grad f(y_k; xi_k)

SCHEDULES = ("constant", "periodic", "opta", "optb", "optc", "sequential")


@dataclass(frozen=True, eq=False)
class FullGradient(PerExampleTransform):
    """An anchor's bullseye: the gradient of its mean loss over all its examples at x_t,
    summed from one epoch of mini-batches (per-example gradients over the node's example
    count, so a short last batch weighs what it holds).  It returns zero steps, so the rows
    stay at x_t (plain SGD without weight decay); :meth:`finish` makes the sum the new
    bullseye and keeps its change for the upload."""

    examples: np.ndarray  # each node's number of examples (int64), by global id
    slots = (GRADIENT_SUM, BULLSEYE, BULLSEYE_CHANGE)

    def reduce(
        self,
        per_example: torch.Tensor,
        weight: torch.Tensor,
        nodes: torch.Tensor,
        round_idx: int,
        step: int,
    ) -> torch.Tensor:
        counts = torch.as_tensor(self.examples)[nodes.cpu()].clamp_min(1)
        summed = (per_example * weight[..., None]).sum(dim=1)
        return summed / counts.to(summed)[:, None]

    def __call__(
        self, grads: torch.Tensor, params: torch.Tensor, start: torch.Tensor, slots: Slots
    ) -> torch.Tensor:
        check(
            torch.equal(params, start),
            "strategy=fedamd's anchors take every gradient at x_t, but the local optimizer "
            "moved them with a zero gradient: set optimizer.weight_decay=0",
        )
        slots[GRADIENT_SUM].add_(grads)
        return torch.zeros_like(grads)

    def finish(
        self,
        params: torch.Tensor,
        start: torch.Tensor,
        steps: torch.Tensor,
        lr: float | torch.Tensor,
        slots: Slots,
    ) -> None:
        slots[BULLSEYE_CHANGE].copy_(slots[GRADIENT_SUM] - slots[BULLSEYE])
        slots[BULLSEYE].copy_(slots[GRADIENT_SUM])
        slots[GRADIENT_SUM].zero_()


def first_step(params: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
    """Rows still at the round's start point: their local step 0 (SCAFFOLD's option I test)."""
    return (params == start).all(dim=1)


@dataclass(frozen=True)
class PreviousPoint(GradientTransform):
    """SARAH, first of three: keeps grad f(y_k; xi_k) and hands on y_{k-1} (y_0 at step 0)."""

    slots = (PREVIOUS_POINT, CURRENT_GRADIENT)

    def __call__(
        self, grads: torch.Tensor, params: torch.Tensor, start: torch.Tensor, slots: Slots
    ) -> torch.Tensor:
        first = first_step(params, start)
        slots[PREVIOUS_POINT][first] = params[first]
        slots[CURRENT_GRADIENT].copy_(grads)
        previous = slots[PREVIOUS_POINT].clone()
        slots[PREVIOUS_POINT].copy_(params)
        return previous


@dataclass(frozen=True)
class GradientAtPreviousPoint(GradientTransform):
    """SARAH, second of three: grad f(y_{k-1}; xi_k), the step's mini-batch at the point
    it is handed."""

    reevaluates = True

    def reevaluate(
        self, grads: torch.Tensor, params: torch.Tensor, gradient_at: GradientAt
    ) -> torch.Tensor:
        return gradient_at(grads)


@dataclass(frozen=True)
class RecursiveDirection(GradientTransform):
    """SARAH, last of three: ``v_k = v_{k-1} - grad f(y_{k-1}; xi_k) + grad f(y_k; xi_k)``,
    v_{-1} = g_t (downloaded into the slot); the step is ``y_{k+1} = y_k - lr v_k``."""

    slots = (DIRECTION, CURRENT_GRADIENT)

    def __call__(
        self, grads: torch.Tensor, params: torch.Tensor, start: torch.Tensor, slots: Slots
    ) -> torch.Tensor:
        slots[DIRECTION].add_(slots[CURRENT_GRADIENT] - grads)
        return slots[DIRECTION].clone()


def anchor_probability(schedule: str, num_clients: int, sampled: int) -> float:
    """The official code's probabilities from M clients and A sampled per round (main_*.py
    opta, optb, optc): opta minimises ``1/(1 - p^A) + 2M/(A p sqrt(1 - p^A))`` over (0, 1);
    optb is ``sqrt(4 r^2 + 2 r) - 2 r``, r = M/A; optc is ``(2/(A + 2))^(1/A)``."""
    ratio = num_clients / sampled
    if schedule == "optb":
        return math.sqrt(4 * ratio**2 + 2 * ratio) - 2 * ratio
    if schedule == "optc":
        return (2 / (sampled + 2)) ** (1 / sampled)

    def bound(p: float) -> float:
        rest = 1 - p**sampled
        return 1 / rest + 2 * ratio / (p * math.sqrt(rest))

    found = scipy.optimize.minimize_scalar(bound, bounds=(1e-9, 1 - 1e-9), method="bounded")
    return float(found.x)


class FedAMD(FedAvg):
    """FedAMD (Wu, Guo, Qu, He, Liu and Gao, "Anchor Sampling for Federated Learning with
    Partial Client Participation", ICML 2023, arXiv 2206.05891), as the official code
    (github.com/HarliWu/FedAMD, algo/fedamd.py and main_emnist.py) runs it.

    Before round 0 every client m downloads x_0 and uploads its full-batch gradient b_m
    there (its bullseye).  Each round the server samples clients uniformly (as FedAvg) and
    fixes ``g_t = (1/M) sum_m b_m`` over all M clients.  Each sampled client is an anchor
    with probability p_t (``anchor_schedule``: ``constant`` p, the code's ``opta``,
    ``optb``, ``optc`` from M and the sample size, ``sequential``
    ``min(1/ln max((t + 14)/5, e), 1)``; ``periodic``: all of them every
    ``anchor_period``-th round, round 0 first), else a miner.  An anchor uploads a new
    full-batch gradient at x_t, which replaces its b_m from the next round on; a miner
    receives g_t and runs K SARAH steps from y_0 = x_t with v_{-1} = g_t (so v_0 = g_t):
    ``v_k = v_{k-1} - grad f(y_{k-1}; xi_k) + grad f(y_k; xi_k)`` (one mini-batch xi_k at
    both points), ``y_{k+1} = y_k - lr v_k``, and uploads its model.  The server averages
    the miners' models uniformly (``server_lr`` scales the step; 1 in the code); anchors do
    not move x, and a round without miners leaves it.

    Bytes: an anchor costs a model down and a gradient up, a miner a model and g_t down
    and a model up (uploads of b_m travel as their change, the same size).  The clients'
    initial gradients cost every client a model down and a gradient up in round 0.
    ``counters`` report the anchors, the miners and the per-example gradients computed so
    far (an anchor's examples; two per example of a miner's mini-batches).  Plain SGD only:
    momentum would change the SARAH step, weight decay the anchors' point.  The per-example
    gradients of the anchors' epoch are not in the memory estimate (it counts them for
    privacy only).
    """

    weighs_clients = False
    assumes_sgd = True  # fedsim.build refuses other local optimizers

    def __init__(
        self,
        anchor_probability: float = 0.2,
        anchor_schedule: str = "constant",
        anchor_period: int | None = None,
        server_lr: float = 1.0,
        sample_size: int | None = 10,
        fraction: float | None = None,
        local_epochs: int | None = None,
        local_steps: int | None = 10,
    ) -> None:
        super().__init__(sample_size, fraction, local_epochs, local_steps, weighting="uniform")
        check(
            anchor_schedule in SCHEDULES,
            f"strategy.anchor_schedule={anchor_schedule!r} is not one of: {', '.join(SCHEDULES)}",
        )
        check(
            0 <= anchor_probability <= 1,
            f"strategy.anchor_probability={anchor_probability} must lie in [0, 1]",
        )
        check(
            (anchor_period is not None) == (anchor_schedule == "periodic"),
            f"strategy.anchor_period={anchor_period} with strategy.anchor_schedule="
            f"{anchor_schedule}: set a period (an integer >= 2) with periodic only",
        )
        check(
            anchor_period is None or anchor_period >= 2,
            f"strategy.anchor_period={anchor_period} must be an integer >= 2",
        )
        check(server_lr > 0, f"strategy.server_lr={server_lr} must be > 0")
        self.probability, self.schedule = anchor_probability, anchor_schedule
        self.period = anchor_period
        self.server_optimizer = None if server_lr == 1 else ServerMomentum(server_lr, 0.0)
        self.roles = {"anchors": 0.0, "miners": 0.0, "gradient_samples": 0.0}

    def held_nodes(self) -> None:
        """Every client keeps its last gradient (and a miner its SARAH state)."""
        return None

    def validate(self, federation: Federation) -> None:
        super().validate(federation)
        check(
            federation.momentum == 0,
            f"optimizer.momentum={federation.momentum}: strategy=fedamd's miners step along "
            "the SARAH direction by plain SGD; set optimizer.momentum=0",
        )

    def probability_at(self, round_idx: int, federation: Federation) -> float:
        """p_t, the chance that a sampled client is an anchor in round ``round_idx``."""
        if self.schedule == "constant":
            return self.probability
        if self.schedule == "sequential":
            return min(1 / math.log(max((round_idx + 14) / 5, math.e)), 1.0)
        return anchor_probability(
            self.schedule, federation.num_nodes, self.sampling.of(federation.num_nodes)
        )

    def anchors(self, round_idx: int, sampled: np.ndarray, federation: Federation) -> np.ndarray:
        """Which of ``sampled`` are anchors (a mask): each a Bernoulli(p_t) draw of its own
        from (seed, round, node), or all of them on every ``anchor_period``-th round."""
        if self.period is not None:  # anchor_schedule=periodic
            return np.full(len(sampled), round_idx % self.period == 0)
        nodes = torch.as_tensor(sampled, dtype=torch.int64)
        draws = rng.uniform(federation.seed, rng.PROTOCOL, round_idx, nodes, torch.zeros(1))
        return draws[:, 0].numpy() < self.probability_at(round_idx, federation)

    def plan(self, round_idx: int, federation: Federation) -> RoundPlan:
        server, num_nodes = np.array([federation.num_nodes]), federation.num_nodes
        sampled = self.sample(round_idx, federation)
        is_anchor = self.anchors(round_idx, sampled, federation)
        anchors, miners = sampled[is_anchor], sampled[~is_anchor]
        steps: list[Step] = []
        if round_idx == 0:
            steps += self.bullseyes(np.arange(num_nodes), federation, initial=True)
        steps.append(Average(server, sampled, np.ones(1)))
        if len(miners):
            steps += [
                Average(server, miners, np.ones(1), payload=TARGET, into=DIRECTION),
                self.local_training(miners, round_idx, federation),
            ]
        steps += self.bullseyes(anchors, federation)
        if len(miners):
            weights = np.full(len(miners), 1 / len(miners))
            steps.append(Average(miners, server, weights, update=self.server_optimizer))
        self.count(anchors, miners, federation, initial=round_idx == 0)
        return RoundPlan(steps=tuple(steps))

    def bullseyes(
        self, clients: np.ndarray, federation: Federation, initial: bool = False
    ) -> list[Step]:
        """``clients`` compute their full-batch gradients and the server moves g by
        (1/M) times their changes (first downloading x_0 to them, ``initial``)."""
        if not len(clients):
            return []
        server = np.array([federation.num_nodes])
        examples = np.asarray(federation.num_examples, dtype=np.int64)
        everyone = np.full(len(clients), 1 / federation.num_nodes)
        upload = Average(clients, server, everyone, Accumulate(), BULLSEYE_CHANGE, TARGET)
        train = Train(clients, epochs=1, transforms=(FullGradient(examples),))
        download = [Average(server, clients, np.ones(1))] if initial else []
        return [*download, train, upload]

    def local_training(self, sampled: np.ndarray, round_idx: int, federation: Federation) -> Train:
        """The miners' K SARAH steps from x_t."""
        sarah = (PreviousPoint(), GradientAtPreviousPoint(), RecursiveDirection())
        return Train(sampled, epochs=self.local_epochs, steps=self.local_steps, transforms=sarah)

    def count(
        self, anchors: np.ndarray, miners: np.ndarray, federation: Federation, initial: bool
    ) -> None:
        """Add the round's roles and per-example gradients to :meth:`counters`."""
        examples = federation.num_examples.astype(np.float64)
        self.roles["anchors"] += len(anchors)
        self.roles["miners"] += len(miners)
        samples = examples.sum() if initial else 0.0
        samples += examples[anchors].sum() + 2 * self.miner_samples(examples[miners], federation)
        self.roles["gradient_samples"] += float(samples)

    def miner_samples(self, examples: np.ndarray, federation: Federation) -> float:
        """Examples in the miners' local mini-batches (each takes two gradients)."""
        if self.local_steps is None:
            return float(self.local_epochs * examples.sum())
        return float(samples_in_steps(examples, self.local_steps, federation.batch_size).sum())

    def counters(self) -> dict[str, float]:
        return dict(self.roles)

    def state(self) -> dict[str, Any]:
        return dict(self.roles)

    def restore(self, state: dict[str, Any]) -> None:
        self.roles.update(state)
