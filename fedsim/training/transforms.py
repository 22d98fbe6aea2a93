"""Gradient transforms: what a strategy does to each local step's gradient before the
optimizer takes it (FedProx's proximal term), for stacked rows of nodes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch


class GradientTransform(Protocol):
    """A rewrite of the (nodes, d) gradients at one local step.

    ``params`` are the nodes' parameters now, ``start`` what they were when this round's
    training began; the result is the gradient the optimizer steps with.
    """

    def __call__(
        self, grads: torch.Tensor, params: torch.Tensor, start: torch.Tensor
    ) -> torch.Tensor: ...


def transformed(
    transforms: Sequence[GradientTransform],
    grads: torch.Tensor,
    params: torch.Tensor,
    start: torch.Tensor,
) -> torch.Tensor:
    """``grads`` through every transform, in order."""
    for transform in transforms:
        grads = transform(grads, params, start)
    return grads
