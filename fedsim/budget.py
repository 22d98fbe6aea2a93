"""Budgets: what a run may spend (rounds, local steps, bytes, simulated and wall time), and
the local steps its nodes took.

A run stops after the round in which the first of its budgets is spent, so one sweep
compares strategies at equal cost whatever a "round" means to each (a tick of event-driven
gossip, one server update of FedAsync): ``fedsim run -m strategy=fedavg,dpsgd,gossip
budget.bytes=1e8 rounds=100000``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np

from fedsim.errors import check
from fedsim.plans import RoundPlan

ROUND = "round"  # the unit of a strategy whose round is one synchronous round of all its nodes


@dataclass(frozen=True)
class Budget:
    """Limits on what a run spends; the first one spent stops it (None: no limit).

    Parameters
    ----------
    rounds
        Rounds (a strategy's own unit: ticks, server updates); the run's ``rounds`` setting
        caps them too.
    local_steps
        Local mini-batch steps per node: all nodes' steps summed over the run, divided by
        the number of nodes (the recorded ``local_steps``).  The mean, not the busiest
        node's, so that FedAvg sampling 10 of 100 nodes and D-PSGD training all of them
        spend the same computation for the same budget.
    bytes
        Bytes sent by all nodes and servers together, models and control messages (the
        recorded ``bytes_sent_total``).
    sim_time_s
        Seconds on the simulated clock (the recorded ``sim_time_s``).
    wall_time_s
        Seconds of real time since the run started (resumed runs count their earlier time).
    """

    rounds: int | None = None
    local_steps: float | None = None
    bytes: float | None = None
    sim_time_s: float | None = None
    wall_time_s: float | None = None

    def __post_init__(self) -> None:
        check(
            self.rounds is None or self.rounds >= 0,
            f"budget.rounds={self.rounds} must be >= 0 (or null: no limit)",
        )
        for name in ("local_steps", "bytes", "sim_time_s", "wall_time_s"):
            value = getattr(self, name)
            check(
                value is None or value > 0,
                f"budget.{name}={value} must be > 0 (or null: no limit)",
            )

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The budgets, in the order in which a tie is reported."""
        return tuple(field.name for field in fields(cls))

    def tightened(self, **limits: float | None) -> Budget:
        """The same budget, each of ``limits`` (None: none) replacing a looser one."""
        tighter: dict[str, Any] = {
            name: limit if getattr(self, name) is None else min(getattr(self, name), limit)
            for name, limit in limits.items()
            if limit is not None
        }
        return replace(self, **tighter)

    def spent(self, usage: Mapping[str, float]) -> str | None:
        """The first budget that ``usage`` (the amounts spent so far, by name) has reached."""
        for name in self.names():
            limit = getattr(self, name)
            if limit is not None and usage[name] >= limit:
                return name
        return None

    def common_with(self, others: Iterable[Budget]) -> list[str]:
        """The budgets other than rounds set here and in every one of ``others``."""
        common = [name for name in self.names()[1:] if getattr(self, name) is not None]
        for other in others:
            common = [name for name in common if getattr(other, name) is not None]
        return common


class LocalSteps:
    """Local mini-batch steps per node, added up round after round from the plans' training.

    A node of ``num_examples`` examples takes ``epochs * ceil(num_examples / batch_size)``
    steps for a :class:`~fedsim.plans.Train` of epochs, its ``steps`` for one of steps (none
    without data), as the local training does; a straggler's partial work counts as done.
    """

    def __init__(self, num_examples: np.ndarray, batch_size: int) -> None:
        self.num_examples, self.batch_size = np.asarray(num_examples), batch_size
        self.steps = np.zeros(len(self.num_examples), dtype=np.int64)  # 8 bytes per node
        self.total, self.most = 0, 0

    def account(self, plan: RoundPlan) -> None:
        """Count one round's training."""
        for step in plan.steps:
            training = step.training()
            if training is None:
                continue
            nodes = np.asarray(training.nodes, dtype=np.int64)
            examples = self.num_examples[nodes].astype(np.int64)
            if training.epochs is not None:
                taken = np.asarray(training.epochs) * -(-examples // self.batch_size)
            else:
                taken = np.where(examples > 0, np.asarray(training.steps), 0)
            taken = np.broadcast_to(taken, nodes.shape).astype(np.int64)
            np.add.at(self.steps, nodes, taken)
            self.total += int(taken.sum())
            if len(nodes):
                self.most = max(self.most, int(self.steps[nodes].max()))

    @property
    def mean(self) -> float:
        """Steps per node: all nodes' steps over the number of nodes."""
        return self.total / len(self.steps) if len(self.steps) else 0.0

    def metrics(self) -> dict[str, float]:
        """``local_steps`` (the mean per node) and ``local_steps_max_node``, cumulative."""
        return {"local_steps": self.mean, "local_steps_max_node": float(self.most)}

    def state(self) -> dict[str, Any]:
        return {"local_steps": self.steps.copy()}

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from a :meth:`state` (a checkpoint from before steps were counted: 0)."""
        saved = state.get("local_steps")
        self.steps = np.zeros_like(self.steps) if saved is None else np.asarray(saved).copy()
        self.total, self.most = int(self.steps.sum()), int(self.steps.max(initial=0))


def mixed_units_warning(jobs: Iterable[tuple[str, str, Budget]]) -> str | None:
    """A one-line warning for a sweep whose strategies count rounds in different units with
    no budget but rounds common to all jobs, or None.

    Parameters
    ----------
    jobs
        Per job: the strategy's name, its ``round_unit`` and the job's budget.
    """
    jobs = list(jobs)
    units: dict[str, list[str]] = {}
    for strategy, unit, _ in jobs:
        names = units.setdefault(unit, [])
        if strategy not in names:
            names.append(strategy)
    if len(units) < 2 or (jobs and jobs[0][2].common_with(budget for *_, budget in jobs[1:])):
        return None
    mixed = "; ".join(f"{unit}: {', '.join(names)}" for unit, names in units.items())
    return (
        f"this sweep's strategies count rounds in different units ({mixed}) and share no "
        "budget but rounds: set budget.bytes, budget.local_steps, budget.sim_time_s or "
        "budget.wall_time_s to compare them at equal cost"
    )
