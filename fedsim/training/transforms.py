"""Gradient transforms: what a strategy does to each local step's gradient before the
optimizer takes it (FedProx's proximal term, SCAFFOLD's control variates), for stacked
rows of nodes, with any per-node state they need kept by the backend."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch

Slots = dict[str, torch.Tensor]


class GradientTransform:
    """A rewrite of the (nodes, d) gradients at each local step of a Train step.

    ``slots`` names the per-row states (besides the parameters) the transform reads and
    writes: the backend hands it the training nodes' rows of each, as a dict of (nodes, d)
    tensors, and keeps what :meth:`finish` leaves in them (SCAFFOLD's control variates).
    """

    slots: ClassVar[tuple[str, ...]] = ()

    def __call__(
        self, grads: torch.Tensor, params: torch.Tensor, start: torch.Tensor, slots: Slots
    ) -> torch.Tensor:
        """The gradient to step with; ``params`` are the nodes' parameters now, ``start``
        what they were when this round's training began (unchanged by default: a transform
        that only keeps state after training gives :meth:`finish` alone)."""
        return grads

    def finish(
        self,
        params: torch.Tensor,
        start: torch.Tensor,
        steps: torch.Tensor,
        lr: float | torch.Tensor,
        slots: Slots,
    ) -> None:
        """After training, with ``steps`` (nodes,) the local steps each node took at
        learning rate ``lr`` (the round's scheduled rate, or (nodes,) each node's mean rate
        when it changed from step to step): update ``slots`` in place (nothing by default)."""


@dataclass(frozen=True, eq=False)
class Rewrite:
    """A chunk's transforms with what they read: its rows at the start of training and its
    rows of every slot the transforms use."""

    transforms: tuple[GradientTransform, ...]
    start: torch.Tensor
    slots: Slots

    def __call__(
        self, grads: torch.Tensor, params: torch.Tensor, node: int | None = None
    ) -> torch.Tensor:
        """``grads`` through every transform, for the whole chunk or for its ``node`` alone."""
        start, slots = self.start, self.slots
        if node is not None:
            start = start[node : node + 1]
            slots = {name: rows[node : node + 1] for name, rows in slots.items()}
        for transform in self.transforms:
            grads = transform(grads, params, start, slots)
        return grads

    def finish(self, params: torch.Tensor, steps: torch.Tensor, lr: float | torch.Tensor) -> None:
        """Every transform's :meth:`GradientTransform.finish`, in order."""
        for transform in self.transforms:
            transform.finish(params, self.start, steps, lr, self.slots)


def slot_names(transforms: Sequence[GradientTransform]) -> list[str]:
    """Every slot the transforms use, once each, in order."""
    return list(dict.fromkeys(name for transform in transforms for name in transform.slots))
