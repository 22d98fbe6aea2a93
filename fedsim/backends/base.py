"""What the engine asks of a backend: execute plans on the rows, read rows and their
statistics, save and restore them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch

from fedsim.aggregators import Aggregator
from fedsim.errors import check
from fedsim.messages import MessageTransforms
from fedsim.plans import Average, RoundPlan
from fedsim.task import Task
from fedsim.training.layout import ParameterLayout

if TYPE_CHECKING:
    from fedsim.topology.base import Topology


class Backend(Protocol):
    """Holds the federation's rows (nodes, then servers) and executes round plans on them."""

    def start(
        self,
        task: Task,
        num_rows: int,
        aggregator: Aggregator | None = None,
        topology: Topology | None = None,
        messages: MessageTransforms | None = None,
        held: np.ndarray | None = None,
    ) -> None:
        """Give every row the task's initial model; ``aggregator`` combines what a row
        receives, ``messages`` rewrite what the rows send; ``held``: the nodes the strategy
        holds before its first round (None: every node has a row from the start)."""

    def execute(self, plan: RoundPlan, round_idx: int) -> None:
        """Run the plan's steps in order."""

    def keep(self, nodes: np.ndarray | None) -> None:
        """The nodes whose rows the strategy keeps after this round (None: all); with rows
        on demand the others' rows are released when the next plan does not use them."""

    def held_nodes(self) -> np.ndarray | None:
        """The nodes that have rows now (None: every node)."""

    def rows(self, rows: np.ndarray | slice) -> torch.Tensor:
        """Copies of ``rows``' parameters."""

    def node_mean(self, num_nodes: int, nodes: np.ndarray | None = None) -> torch.Tensor:
        """The average of the nodes' models (of ``nodes``' models, where given)."""

    def all_finite(self) -> bool:
        """Whether every parameter is finite."""

    def consensus_distance(self, num_nodes: int, nodes: np.ndarray | None = None) -> float:
        """Mean squared distance of the node models (of ``nodes``' models) to their average."""

    def correction_factors(self) -> dict[str, float]:
        """Mean correction factor per corrected tensor since the last call (then reset)."""

    def counters(self) -> dict[str, float]:
        """The backend's own traffic (not the simulated nodes'), as metrics."""

    def state(self) -> dict[str, Any]:
        """Everything the rows and the backend's counters hold, as plain data."""

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from a :meth:`state`."""

    def close(self) -> None:
        """Release what the backend holds (processes, actors)."""


def rebased(
    step: Average, own: torch.Tensor, updates: torch.Tensor
) -> tuple[Average, torch.Tensor, float]:
    """An upload of updates (``Average.base``) as an average of models: the sources of
    positive weight, their updates added to the target's row ``own`` (1, d), their weights
    normalised, and the weights' sum ``total``; the target then becomes
    ``own + total (average - own)``, ``own`` plus the weighted sum of the updates when the
    aggregator takes the mean."""
    kept = step.weights > 0
    total = float(step.weights[kept].sum())
    models = own + updates[torch.as_tensor(kept, device=updates.device)]
    return (
        replace(step, sources=step.sources[kept], weights=step.weights[kept] / total),
        models,
        total,
    )


def combined_average(
    step: Average,
    sources: torch.Tensor,
    own: Callable[[], torch.Tensor],
    aggregator: Aggregator,
    layout: ParameterLayout,
    num_nodes: int,
    finish: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """The step's average of the received rows ``sources``, the row kernel both backends
    use: where it averages several models, combined per target by an aggregator that
    combines the models (``own()`` the targets' own rows, fetched only then), else the
    weighted sum, corrected by ``finish(merged, target_variance)`` when the aggregator
    corrects on the step's link."""
    combines = step.payload == "params" and len(step.sources) > 1  # models, received
    weights = torch.as_tensor(step.weights, dtype=sources.dtype, device=sources.device)
    if combines and aggregator.combines_rows:  # one combination per target
        targets = own()
        received = sources.expand(len(targets), *sources.shape)
        return aggregator.combine(received, weights.expand(len(targets), -1), targets)
    average = weights @ sources
    if combines and aggregator.corrects_on(step.link(num_nodes)):
        target = aggregator.variances(sources, layout).mean(dim=0)
        average = finish(average[None], target[None])[0]
    return average


def one_each(step: Average, sources: torch.Tensor) -> torch.Tensor:
    """A broadcast's model ``sources`` (1, d) once per target: a compressed downlink sends
    each client its own message (fedsim.compression.base.Compressor)."""
    check(
        len(step.sources) == 1,
        f"a compressed downlink sends one model to each client, not an average of "
        f"{len(step.sources)} servers' models",
    )
    return sources.expand(len(step.targets), -1)
