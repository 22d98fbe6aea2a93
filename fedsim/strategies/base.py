"""The strategy interface: a strategy turns a round index into a round plan."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from fedsim.errors import check
from fedsim.federation import Federation
from fedsim.plans import RoundPlan

__all__ = ["Federation", "SampleSize", "Strategy", "local_work"]  # Federation: re-exported


class Strategy(ABC):
    """Decides who trains and who mixes with whom; never touches parameters.

    Subclasses set ``num_servers`` (rows after the nodes that hold server models),
    ``server_holds_global_model`` (the first server's row is the model to evaluate, as in
    FedAvg; otherwise the nodes' average is), ``uses_topology`` (whether nodes talk over
    the configured graph), ``barrier`` (every round ends when the slowest node is done, as
    in synchronous D-PSGD), ``handles_churn`` (the protocol copes with nodes that crash, leave
    and join), ``buffers_messages`` (nodes keep only the weighted sum of the models they
    receive, so no aggregator can combine the models themselves), ``weighs_clients`` (a
    server's synchronous average over clients, whose weights an aggregator may set, as
    ``aggregator=feddisco`` does, through ``reweighting``), ``round_unit`` (what one
    of its rounds is, in reports and summaries: ``round``, or ``tick`` of an event-driven
    protocol, ...) and implement
    :meth:`plan`.  Stateful protocols also implement :meth:`state` and :meth:`restore` so
    that checkpoints can hold them.
    """

    num_servers: ClassVar[int] = 0
    server_holds_global_model: ClassVar[bool] = False
    uses_topology: ClassVar[bool] = False
    barrier: ClassVar[bool] = False
    handles_churn: ClassVar[bool] = False
    buffers_messages: ClassVar[bool] = False
    weighs_clients: ClassVar[bool] = False  # a server average an aggregator may reweigh
    replicated: ClassVar[bool] = False  # every node holds a replica of one model (recorded:
    # replicas_distinct, the number of bitwise different node models, at each evaluation)
    round_unit: ClassVar[str] = "round"

    def validate(self, federation: Federation) -> None:
        """Raise :class:`~fedsim.errors.ConfigError` if it cannot run on ``federation``."""
        return None

    @abstractmethod
    def plan(self, round_idx: int, federation: Federation) -> RoundPlan:
        """The plan of round ``round_idx`` (the same inputs and state give the same plan)."""

    def global_model_row(self, num_nodes: int) -> int | None:
        """The row that holds the model to evaluate, or None for the nodes' average."""
        return num_nodes if self.server_holds_global_model else None

    def held_nodes(self) -> np.ndarray | None:
        """The nodes whose rows (models and states) must outlive the round just planned, or
        None where every node keeps its row between rounds, as decentralized nodes keep
        their models (the default).  A strategy whose clients hold nothing between rounds
        returns the ones still in flight (none, in synchronous FL); with
        ``backend.rows=on_demand`` the backend then holds a row only for the nodes a round
        uses and these (fedsim.backends.pool)."""
        return None

    def counters(self) -> dict[str, float]:
        """What it counts of the run so far (recorded at each evaluation; none by default)."""
        return {}

    def state(self) -> dict[str, Any]:
        """The strategy's state after the last planned round (empty for stateless ones)."""
        return {}

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from a :meth:`state`."""
        return None


def local_work(local_epochs: int | None, local_steps: int | None) -> tuple[int | None, int | None]:
    """Check that exactly one of ``local_epochs`` / ``local_steps`` is a positive integer."""
    check(
        (local_epochs is None) != (local_steps is None),
        f"strategy.local_epochs={local_epochs} and strategy.local_steps={local_steps}: "
        "set exactly one of them (the other to null)",
    )
    for name, value in (("local_epochs", local_epochs), ("local_steps", local_steps)):
        check(value is None or value >= 1, f"strategy.{name}={value} must be an integer >= 1")
    return local_epochs, local_steps


@dataclass(frozen=True)
class SampleSize:
    """How many nodes a server samples each time: a ``count``, or a ``rate`` of all nodes.

    ``names`` are the two settings as the strategy calls them, for error messages.
    """

    count: int | None
    rate: float | None
    names: tuple[str, str]

    def __post_init__(self) -> None:
        count_name, rate_name = self.names
        check(
            (self.count is None) != (self.rate is None),
            f"strategy.{count_name}={self.count} and strategy.{rate_name}={self.rate}: "
            "set exactly one of them (the other to null)",
        )
        check(
            self.count is None or self.count >= 1,
            f"strategy.{count_name}={self.count} must be >= 1",
        )
        check(
            self.rate is None or 0 < self.rate <= 1,
            f"strategy.{rate_name}={self.rate} must lie in (0, 1]",
        )

    def of(self, num_nodes: int) -> int:
        """The number of nodes sampled out of ``num_nodes``."""
        return self.count if self.count is not None else max(1, round(self.rate * num_nodes))

    def check_fits(self, num_nodes: int) -> None:
        """Raise :class:`ConfigError` if more nodes would be sampled than exist."""
        check(
            self.of(num_nodes) <= num_nodes,
            f"strategy.{self.names[0]}={self.of(num_nodes)} must be <= num_nodes={num_nodes}",
        )
