"""The local optimizer interface: an update rule for stacked rows with named per-row state."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar

import torch

OptimizerState = dict[str, torch.Tensor]  # name -> (nodes, d) rows or (nodes,) counters


class LocalOptimizer:
    """A node's local optimizer, applied to the (nodes, d) rows of many nodes at once.

    Subclasses are frozen dataclasses of hyperparameters with ``lr`` (the base learning
    rate, which ``lr_schedule`` scales) and ``batch_size``.  Their state is a dict of named
    per-row tensors, (nodes, d) or (nodes,) counters, that :meth:`init` makes and the
    backend keeps beside the parameters (reset by ``Train(fresh_optimizer=True)``);
    ``torch_keys`` maps each name to the state key of the ``torch.optim`` optimizer of
    :meth:`torch_optimizer`, which the per-node loop trainer runs on views of the same state.
    """

    lr: float
    batch_size: int
    momentum: float = 0.0  # heavy-ball momentum, as strategies that assume SGD read it
    torch_keys: ClassVar[Mapping[str, str]] = {}

    @property
    def state_rows(self) -> int:
        """How many (nodes, d) tensors the state holds (for the memory estimate)."""
        return 0

    @property
    def step_temporaries(self) -> int:
        """Row-sized temporaries a vectorised step makes, besides the gradient and the
        chunk's state rows (for the memory estimate)."""
        return 0

    def init(self, params: torch.Tensor) -> OptimizerState:
        """The fresh state of the (nodes, d) ``params``' rows: zeros."""
        return {}

    def step(
        self,
        params: torch.Tensor,
        grads: torch.Tensor,
        state: OptimizerState,
        active: torch.Tensor,
        lr: torch.Tensor,
    ) -> None:
        """Update ``params`` and ``state`` in place on the rows where ``active`` (nodes,)
        holds; other rows keep their parameters, state and counters.  ``lr`` (nodes,) is
        each row's learning rate at this step, float64."""
        raise NotImplementedError

    def torch_optimizer(self, weights: Sequence[torch.nn.Parameter]) -> torch.optim.Optimizer:
        """The ``torch.optim`` optimizer with these hyperparameters over ``weights``."""
        raise NotImplementedError
