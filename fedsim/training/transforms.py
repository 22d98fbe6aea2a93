"""Gradient transforms: what is done to each local step's gradient before the optimizer
takes it (FedProx's proximal term, SCAFFOLD's control variates, DP-SGD's per-example
clipping and noise), for stacked rows of nodes, with any per-node state they need kept by
the backend.  Chained in order, as Optax's ``chain``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch

from fedsim.errors import check

Slots = dict[str, torch.Tensor]
GradientAt = Callable[[torch.Tensor], torch.Tensor]
LossAt = Callable[[torch.Tensor], torch.Tensor]


class GradientTransform:
    """A rewrite of the (nodes, d) gradients at each local step of a Train step.

    ``slots`` names the per-row states (besides the parameters) the transform reads and
    writes: the backend hands it the training nodes' rows of each, as a dict of (nodes, d)
    tensors, and keeps what :meth:`finish` leaves in them (SCAFFOLD's control variates).
    """

    slots: ClassVar[tuple[str, ...]] = ()
    per_example: ClassVar[bool] = False
    reevaluates: ClassVar[bool] = False  # takes gradients at other points (reevaluate)
    zeroth_order: ClassVar[bool] = False  # estimates the gradient from losses (estimate)

    def __call__(
        self, grads: torch.Tensor, params: torch.Tensor, start: torch.Tensor, slots: Slots
    ) -> torch.Tensor:
        """The gradient to step with; ``params`` are the nodes' parameters now, ``start``
        what they were when this round's training began (unchanged by default: a transform
        that only keeps state after training gives :meth:`finish` alone)."""
        return grads

    def reevaluate(
        self, grads: torch.Tensor, params: torch.Tensor, gradient_at: GradientAt
    ) -> torch.Tensor:
        """For a transform that ``reevaluates`` (called instead of ``__call__``): the
        gradient to step with, given ``gradient_at(points)``, the loss gradients of the same
        mini-batches at other (nodes, d) points (SAM's ascent point)."""
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


class ZerothOrderTransform(GradientTransform):
    """A transform that estimates each step's gradient from losses alone, forward passes at
    points of its choosing, in place of the backward pass (SPSA).  It comes first in a
    chain; the trainer then takes no gradient of the loss at all."""

    zeroth_order: ClassVar[bool] = True

    def estimate(
        self,
        params: torch.Tensor,
        start: torch.Tensor,
        loss_at: LossAt,
        nodes: torch.Tensor,
        round_idx: int,
        step: int,
    ) -> torch.Tensor:
        """The (nodes, d) gradient estimates of local step ``step`` of round ``round_idx``:
        ``params`` the rows now, ``start`` at the start of training, ``loss_at(points)`` the
        (nodes,) mean losses of the step's mini-batches at (nodes, d) points, ``nodes`` the
        rows' global ids."""
        raise NotImplementedError

    def __call__(
        self, grads: torch.Tensor, params: torch.Tensor, start: torch.Tensor, slots: Slots
    ) -> torch.Tensor:
        return grads  # its work was done in estimate


class PerExampleTransform(GradientTransform):
    """A transform that takes a step's per-example gradients rather than their mean and
    reduces them to the step's gradient (DP-SGD's clipped, noised sum).  It comes first in
    a chain; the trainer computes per-example gradients only when a step has one."""

    per_example: ClassVar[bool] = True

    def reduce(
        self,
        per_example: torch.Tensor,
        weight: torch.Tensor,
        nodes: torch.Tensor,
        round_idx: int,
        step: int,
    ) -> torch.Tensor:
        """The (nodes, d) gradients of local step ``step`` of round ``round_idx`` from the
        (nodes, B, d) ``per_example`` gradients, ``weight`` (nodes, B) 1.0 for real examples
        and 0.0 for padding, ``nodes`` the rows' global ids."""
        raise NotImplementedError

    def __call__(
        self, grads: torch.Tensor, params: torch.Tensor, start: torch.Tensor, slots: Slots
    ) -> torch.Tensor:
        return grads  # its work was done in reduce


@dataclass(frozen=True, eq=False)
class Rewrite:
    """A chunk's transforms with what they read: its rows at the start of training, its
    rows of every slot the transforms use, and (for a per-example transform) the rows'
    global ids and the round."""

    transforms: tuple[GradientTransform, ...]
    start: torch.Tensor
    slots: Slots
    nodes: torch.Tensor | None = None
    round_idx: int = 0

    def __post_init__(self) -> None:
        later = [transform for transform in self.transforms[1:] if transform.per_example]
        check(not later, f"a per-example gradient transform must come first, not {later}")
        later = [transform for transform in self.transforms[1:] if transform.zeroth_order]
        check(not later, f"a zeroth-order gradient transform must come first, not {later}")
        check(
            self.per_example is None or not any(t.reevaluates for t in self.transforms),
            "a per-example gradient transform (privacy) cannot be chained with one that "
            "takes gradients at other points (SAM): those would not be clipped and noised",
        )

    @property
    def per_example(self) -> PerExampleTransform | None:
        """The chain's per-example transform, if it has one."""
        first = self.transforms[0] if self.transforms else None
        return first if isinstance(first, PerExampleTransform) else None

    @property
    def zeroth_order(self) -> ZerothOrderTransform | None:
        """The chain's zeroth-order transform, if it has one."""
        first = self.transforms[0] if self.transforms else None
        return first if isinstance(first, ZerothOrderTransform) else None

    def estimate(
        self, params: torch.Tensor, loss_at: LossAt, step: int, node: int | None = None
    ) -> torch.Tensor:
        """The zeroth-order transform's gradient estimates at local ``step``, for the whole
        chunk or for its ``node`` alone."""
        transform, nodes, start = self.zeroth_order, self.nodes, self.start
        check(transform is not None and nodes is not None, "no zeroth-order transform")
        if node is not None:
            nodes, start = nodes[node : node + 1], start[node : node + 1]
        return transform.estimate(params, start, loss_at, nodes, self.round_idx, step)

    def reduce(
        self, per_example: torch.Tensor, weight: torch.Tensor, step: int, node: int | None = None
    ) -> torch.Tensor:
        """The per-example transform's gradients at local ``step``, for the whole chunk or
        for its ``node`` alone."""
        transform, nodes = self.per_example, self.nodes
        check(transform is not None and nodes is not None, "no per-example transform to reduce")
        if node is not None:
            nodes = nodes[node : node + 1]
        return transform.reduce(per_example, weight, nodes, self.round_idx, step)

    def __call__(
        self,
        grads: torch.Tensor,
        params: torch.Tensor,
        node: int | None = None,
        gradient_at: GradientAt | None = None,
    ) -> torch.Tensor:
        """``grads`` through every transform, for the whole chunk or for its ``node`` alone;
        ``gradient_at`` gives the loss gradients of the step's mini-batches at other points."""
        start, slots = self.start, self.slots
        if node is not None:
            start = start[node : node + 1]
            slots = {name: rows[node : node + 1] for name, rows in slots.items()}
        for transform in self.transforms:
            if transform.reevaluates:
                check(gradient_at is not None, f"{transform} needs gradients at other points")
                grads = transform.reevaluate(grads, params, gradient_at)
            else:
                grads = transform(grads, params, start, slots)
        return grads

    def finish(self, params: torch.Tensor, steps: torch.Tensor, lr: float | torch.Tensor) -> None:
        """Every transform's :meth:`GradientTransform.finish`, in order."""
        for transform in self.transforms:
            transform.finish(params, self.start, steps, lr, self.slots)


def slot_names(transforms: Sequence[GradientTransform]) -> list[str]:
    """Every slot the transforms use, once each, in order."""
    return list(dict.fromkeys(name for transform in transforms for name in transform.slots))
