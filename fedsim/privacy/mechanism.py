"""``privacy=...``: noisy local steps before sharing, with the noise covariance across nodes
that the mechanism prescribes, and the privacy accounting of the run.

CorN-DSGD (Rodio, Chen, Larsson, arXiv 2501.14644) and its baselines: independent local
noise (LDP, DP-DSGD), pairwise-cancelling DECOR (Allouah et al., ICML 2024), globally
cancelling zero-sum noise, CorN's SDP-optimal covariance, and the central-DP reference.
Every node takes ``x_i - lr (sum_s clip_C(g_s) + n_i) / B`` then gossips with W
(adapt-then-combine), with ``n ~ N(0, R)`` across nodes drawn afresh per coordinate,
round and local step; R satisfies ``(R^-1)_ii <= b`` for every node, b from (eps, delta,
C, T) by DECOR's accountant (:mod:`fedsim.privacy.accounting`).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from fedsim.errors import check
from fedsim.federation import Federation
from fedsim.plans import RoundPlan, Train
from fedsim.privacy import accounting
from fedsim.privacy.covariance import NoiseCovariance, covariance, max_inverse_diagonal
from fedsim.privacy.noise import SAMPLERS, NoisyStep

if TYPE_CHECKING:
    from fedsim.messages import MessageTransform

CACHE = 64  # covariances kept (more than any period of a time-varying topology in use)
CURIOUS_MAX_NODES = 200  # one (n-1) x (n-1) eigendecomposition per node above this is slow
UNITS = ("example", "user")  # what the guarantee protects: one example, or a node's whole data


@dataclass(frozen=True, eq=False)
class Solved:
    """A mixing matrix (held: its id keys the cache), its covariance, ``max_i (R^-1)_ii``
    and ``Tr(W R W^T)``."""

    weights: Any
    covariance: NoiseCovariance
    inverse_diagonal: float
    trace: float


THREAT_MODELS = {
    "local": "curious nodes and eavesdroppers: each node's noise is its own",
    "decor": "eavesdroppers; a curious node knows the pairwise seeds of its own edges",
    "zero_sum": "eavesdroppers only: one seed is shared by all nodes",
    "corn": "eavesdroppers only: one seed is shared by all nodes",
    "central": "a trusted aggregator (a reference level; shared models are not protected)",
}


def disabled() -> None:
    """``privacy=none``: nodes share their models as they are."""
    return None


class Privacy:
    """A differentially private run: (``epsilon``, ``delta``)-DP per node over the whole run,
    per-example gradients clipped to ``clip``, noise of the ``mechanism``'s covariance
    (:func:`fedsim.privacy.covariance.covariance` checks the mechanism and the cap).

    ``max_variance_ratio`` caps each node's noise variance at that multiple of the local-DP
    variance 1/b (without a cap the complete graph's optimum is unbounded); ``sampler`` draws
    the noise from the seeds each node knows (``shared_seeds``) or in one central draw.
    ``unit`` is what the guarantee protects: one ``example`` of a node (a step's clipped sum
    moves by at most 2 ``clip``), or a node's whole data, a ``user`` (by at most 2 B ``clip``
    with B the batch size: B^2 times the noise variance).
    """

    # What a privacy option needs from the run besides its plan: DP-SGD clips and noises
    # per-example gradients and leaves the messages alone; a mechanism that encodes the
    # messages instead (privacy=rqm) names its transform and takes no per-example gradients.
    message_transform: MessageTransform | None = None
    per_example_gradients = True

    def __init__(
        self,
        mechanism: str,
        epsilon: float = 10.0,
        delta: float = 1e-5,
        clip: float = 0.1,
        max_variance_ratio: float = 1000.0,
        sampler: str = "shared_seeds",
        solver: str = "CLARABEL",
        unit: str = "example",
    ) -> None:
        accounting.check_privacy_settings(epsilon, delta, clip)
        check(unit in UNITS, f"privacy.unit={unit} is not one of: {', '.join(UNITS)}")
        check(
            sampler in SAMPLERS,
            f"privacy.sampler={sampler} is not one of: {', '.join(SAMPLERS)}",
        )
        self.mechanism, self.epsilon, self.delta, self.clip = mechanism, epsilon, delta, clip
        self.max_variance_ratio, self.sampler, self.solver = max_variance_ratio, sampler, solver
        self.unit = unit

    def prepare(
        self, first_plan: RoundPlan, federation: Federation, rounds: int, name: str
    ) -> None:
        """Check that the strategy named ``name`` trains every node and then gossips in
        round 0 (``first_plan``, as every round), find the noisy steps T of the run, the
        bound b, and solve round 0's covariance: bad settings fail here, before training."""
        self.seed, self.num_nodes = federation.seed, federation.num_nodes
        self.batch_size = federation.batch_size
        pair = _train_then_gossip(first_plan, self.num_nodes)
        check(
            pair is not None,
            f"privacy={self.mechanism} adds noise before every node gossips with W; {name}'s "
            "rounds do not train every node and then gossip (strategy=dpsgd does, in its default "
            "order adapt_then_combine)",
        )
        train, weights = pair
        check(
            not any(transform.reevaluates for transform in train.transforms),
            f"privacy={self.mechanism} clips and noises per-example gradients; {name}'s local "
            "steps also take gradients at other points (SAM), which it would not protect",
        )
        self.steps_per_round = _steps_per_round(train, federation)
        self.total_steps = max(1, rounds * self.steps_per_round)
        examples = federation.batch_size if self.unit == "user" else 1
        self.contribution = self.clip * examples  # the most one protected unit adds to a step
        self.bound = accounting.privacy_bound(
            self.epsilon, self.delta, self.total_steps, self.contribution
        )
        self.worst_inverse_diagonal = 0.0  # over the covariances used so far
        self._solved: dict[int, Solved] = {}
        self.last = self._covariance(weights)

    def _covariance(self, weights: Any) -> Solved:
        """The mechanism's covariance for mixing matrix ``weights``, solved once per matrix
        with what the accounting needs of it (a bounded cache: a topology drawn afresh every
        round brings a new matrix each round)."""
        key = id(weights)
        if key not in self._solved:
            if len(self._solved) >= CACHE:
                del self._solved[next(iter(self._solved))]  # the oldest entry
            found = covariance(
                self.mechanism, weights, self.bound, self.max_variance_ratio, self.solver
            )
            self._solved[key] = Solved(
                weights, found, found.max_inverse_diagonal(), found.trace_after(weights)
            )
        return self._solved[key]

    def apply(self, plan: RoundPlan, round_idx: int) -> RoundPlan:
        """The plan with DP-SGD's step (:class:`NoisyStep`, with the noise for the W the
        plan mixes by) first in its training step's gradient transforms."""
        pair = _train_then_gossip(plan, self.num_nodes)
        check(pair is not None, f"round {round_idx}'s plan has no Train step followed by Gossip")
        train, weights = pair
        self.last = self._covariance(weights)
        if self.mechanism != "central":
            self.worst_inverse_diagonal = max(
                self.worst_inverse_diagonal, self.last.inverse_diagonal
            )
        noisy = NoisyStep(self.clip, self.last.covariance, self.seed, self.batch_size, self.sampler)
        private = replace(train, transforms=(noisy, *train.transforms))
        steps = tuple(private if step is train else step for step in plan.steps)
        return replace(plan, steps=steps)

    def state(self) -> dict[str, float]:
        return {"worst_inverse_diagonal": self.worst_inverse_diagonal}

    def restore(self, state: dict[str, float]) -> None:
        self.worst_inverse_diagonal = state["worst_inverse_diagonal"]

    def metrics(self, rounds_completed: int) -> dict[str, float]:
        """The guarantee spent so far and the residual noise of the last covariance."""
        steps = rounds_completed * self.steps_per_round
        return {
            "privacy_epsilon_spent": self._epsilon(steps, accounting.epsilon_spent),
            "noise_trace": self.last.trace,
            "noise_normalised": self.num_nodes * self.bound * self.last.trace,
        }

    def _epsilon(self, steps: int, accountant) -> float:
        if self.mechanism == "central":  # the network sum's noise: variance 1/b, per node b
            return accountant(self.bound, steps, self.contribution, self.delta)
        return accountant(self.worst_inverse_diagonal, steps, self.contribution, self.delta)

    def summary(self, rounds_completed: int) -> dict[str, Any]:
        """What the run's ``summary.json`` records about its privacy."""
        steps = rounds_completed * self.steps_per_round
        found, curious = self.last.covariance, _curious_node_inverse_diagonal(self.last.covariance)
        return {
            "mechanism": self.mechanism,
            "epsilon": self.epsilon,
            "delta": self.delta,
            "clip": self.clip,
            "unit": self.unit,
            "noisy_steps_planned": self.total_steps,
            "noisy_steps_run": steps,
            "bound_b": self.bound,
            "bound_formula": accounting.BOUND_FORMULA,
            "threat_model": THREAT_MODELS[self.mechanism],
            "max_inverse_diagonal": self.last.inverse_diagonal,
            "independent_variance": found.independent,
            "noise_trace": self.last.trace,
            "noise_normalised": self.num_nodes * self.bound * self.last.trace,
            "epsilon_spent": self._epsilon(steps, accounting.epsilon_spent),
            "epsilon_spent_dp_accounting": self._epsilon(steps, accounting.library_epsilon),
            "epsilon_against_one_curious_node": (
                None
                if curious is None
                else accounting.epsilon_spent(curious, steps, self.contribution, self.delta)
            ),
            "sampler": self.sampler,
            "max_variance_ratio": self.max_variance_ratio,
        }


def _train_then_gossip(plan: RoundPlan, num_nodes: int) -> tuple[Train, Any] | None:
    """The plan's training of every node and the mixing matrix of the gossip right after
    it, if it has them."""
    for step, following in itertools.pairwise(plan.steps):
        training, matrices = step.training(), following.mixing_matrices()
        if training is not None and len(matrices) == 1 and len(training.nodes) == num_nodes:
            return training, matrices[0]
    return None


def _steps_per_round(train: Train, federation: Federation) -> int:
    """Noisy steps a node takes per round at most (the count the accountant composes)."""
    if train.steps is not None:
        return train.most_steps
    per_epoch = np.ceil(np.asarray(federation.num_examples) / federation.batch_size)
    return int(train.most_epochs * per_epoch.max())


def _curious_node_inverse_diagonal(found: NoiseCovariance) -> float | None:
    """max over curious nodes j and other nodes i of ((R_i|j)^-1)_ii: the bound that holds
    once node j subtracts every noise term whose seed it knows (spec section 8).  Without
    pairwise seeds this is ``1 / s`` (a shared seed is known to all); with them it takes one
    eigendecomposition per node, done up to 200 nodes (None above)."""
    if not len(found.edges):
        return found.without([0]).max_inverse_diagonal()
    if found.num_nodes > CURIOUS_MAX_NODES:
        return None
    worst = 0.0
    for node in range(found.num_nodes):
        others = np.delete(np.arange(found.num_nodes), node)
        remaining = found.without([node]).matrix()[np.ix_(others, others)]
        worst = max(worst, max_inverse_diagonal(remaining))
        if math.isinf(worst):
            break
    return worst
