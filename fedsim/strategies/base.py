"""The strategy interface: a strategy turns a round index into a round plan."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from fedsim.errors import check
from fedsim.plans import RoundPlan
from fedsim.topology.base import Topology


@dataclass(frozen=True, eq=False)
class Federation:
    """What a strategy may know about the federation: sizes, topology, data volumes, seed.

    ``topology`` is None for strategies that do not use one (``Strategy.uses_topology``
    false) unless the partition needs it, so it costs nothing to build otherwise.
    """

    num_nodes: int
    seed: int
    topology: Topology | None
    num_examples: np.ndarray


class Strategy(ABC):
    """Decides who trains and who mixes with whom; never touches parameters.

    Subclasses set ``num_servers`` (rows after the nodes that hold server models; the first
    server's row is the global model when there is one), ``uses_topology`` (whether nodes
    talk over the configured graph) and implement :meth:`plan`.
    """

    num_servers: ClassVar[int] = 0
    uses_topology: ClassVar[bool] = False

    def validate(self, federation: Federation) -> None:
        """Raise :class:`~fedsim.errors.ConfigError` if it cannot run on ``federation``."""
        return None

    @abstractmethod
    def plan(self, round_idx: int, federation: Federation) -> RoundPlan:
        """The plan of round ``round_idx`` (pure: the same inputs give the same plan)."""


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
