"""Local training of many nodes at once: ``torch.func`` vmap over the node axis."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from fedsim.training.layout import ParameterLayout
from fedsim.training.schedule import Batches
from fedsim.training.sgd import SGD


class VectorisedTrainer:
    """Runs every node's local SGD steps as one batched computation per step.

    Each node's loss is the mean cross-entropy over the real examples of its mini-batch
    (padding slots carry zero weight), so the result equals a per-node loop over the same
    batches (see :class:`fedsim.training.loop.LoopTrainer`).
    """

    def __init__(self, model: nn.Module, layout: ParameterLayout) -> None:
        self.layout = layout

        def node_loss(flat: torch.Tensor, x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
            logits = functional_call(model, layout.unflatten(flat), (x,))
            losses = F.cross_entropy(logits, y, reduction="none")
            return (losses * weight).sum() / weight.sum().clamp_min(1.0)

        self._grads = vmap(grad(node_loss))

    def train(
        self,
        params: torch.Tensor,
        momentum: torch.Tensor | None,
        batches: Batches,
        train_x: torch.Tensor,
        train_y: torch.Tensor,
        optimizer: SGD,
    ) -> None:
        """Train the (nodes, d) ``params`` in place on ``batches`` of the train set."""
        active = batches.active
        for step in range(batches.num_steps):
            indices = batches.indices[:, step]
            grads = self._grads(params, train_x[indices], train_y[indices], batches.mask[:, step])
            optimizer.step(params, grads, momentum, active[:, step])
