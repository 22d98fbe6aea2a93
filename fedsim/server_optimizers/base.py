"""The server-optimizer interface and the one step every backend applies with it."""

from __future__ import annotations

from typing import Protocol

import torch

State = dict[str, torch.Tensor]


class ServerOptimizer(Protocol):
    """Turns a round's pseudo-gradient into the server's move, with explicit state.

    As Optax's ``(init, update)``: :meth:`init` gives the state for the server rows,
    :meth:`update` the move to add to them and the next state, from ``delta`` (the
    aggregate minus the rows: the direction FedAvg would jump) and the current state.
    """

    def init(self, rows: torch.Tensor) -> State: ...

    def update(self, delta: torch.Tensor, state: State) -> tuple[torch.Tensor, State]: ...


def server_step(
    optimizer: ServerOptimizer, rows: torch.Tensor, average: torch.Tensor, states: dict[str, State]
) -> torch.Tensor:
    """The server ``rows`` after one step of ``optimizer`` towards ``average``; its state is
    kept in ``states`` under the optimizer's class name (what backends checkpoint)."""
    key = type(optimizer).__name__
    state = states[key] if key in states else optimizer.init(rows)
    move, states[key] = optimizer.update(average - rows, state)
    return rows + move
