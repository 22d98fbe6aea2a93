"""The server-optimizer interface and the one step every backend applies with it."""

from __future__ import annotations

from typing import Protocol

import torch

State = dict[str, torch.Tensor]


class ServerOptimizer(Protocol):
    """Turns a round's aggregate into the server's new rows, with explicit state.

    As Optax's ``(init, update)``: :meth:`init` gives the state for the server rows,
    :meth:`update` the new rows and the next state, from the current ``rows``, the
    ``average`` the clients sent (FedOpt's pseudo-gradient is ``average - rows``) and the
    current state.
    """

    def init(self, rows: torch.Tensor) -> State: ...

    def update(
        self, rows: torch.Tensor, average: torch.Tensor, state: State
    ) -> tuple[torch.Tensor, State]: ...


def server_step(
    optimizer: ServerOptimizer,
    rows: torch.Tensor,
    average: torch.Tensor,
    states: dict[str, State],
    slot: str = "params",
) -> torch.Tensor:
    """The server ``rows`` (of ``slot``) after one step of ``optimizer`` with ``average``;
    its state is kept in ``states`` under the slot's and the optimizer's names (what
    backends checkpoint)."""
    key = f"{slot}/{type(optimizer).__name__}"
    state = states[key] if key in states else optimizer.init(rows)
    moved, states[key] = optimizer.update(rows, average, state)
    return moved
