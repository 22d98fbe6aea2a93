"""Local training one node at a time: the plain reference that the vectorised path must equal."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from fedsim.training.layout import ParameterLayout
from fedsim.training.private import NoisyGradients
from fedsim.training.schedule import Batches
from fedsim.training.sgd import SGD
from fedsim.training.transforms import Rewrite


class LoopTrainer:
    """For each node: load its row into a model, run ``torch.optim.SGD`` over its batches, store it.

    The same batches as :class:`~fedsim.training.vectorised.VectorisedTrainer`, with the
    textbook training loop.  Faster than vmap for compute-bound models (convolutions on CPU).
    The model's parameters (and SGD's momentum buffers) are views of one flat vector, so
    loading and storing a node is one copy.
    """

    def __init__(self, model: nn.Module, layout: ParameterLayout, optimizer: SGD) -> None:
        self.model = copy.deepcopy(model)
        self.layout = layout
        self.weights = list(self.model.parameters())
        self.flat = layout.flatten(self.model).clone()
        for weight, view in zip(self.weights, layout.unflatten(self.flat).values(), strict=True):
            weight.data = view
        self.sgd = torch.optim.SGD(
            self.weights,
            lr=optimizer.lr,
            momentum=optimizer.momentum,
            weight_decay=optimizer.weight_decay,
        )
        self.flat_momentum = torch.zeros_like(self.flat) if optimizer.momentum else None
        if self.flat_momentum is not None:
            for weight, view in zip(
                self.weights, layout.unflatten(self.flat_momentum).values(), strict=True
            ):
                self.sgd.state[weight]["momentum_buffer"] = view

    def train(
        self,
        params: torch.Tensor,
        momentum: torch.Tensor | None,
        batches: Batches,
        train_x: torch.Tensor,
        train_y: torch.Tensor,
        noisy: NoisyGradients | None = None,
        rewrite: Rewrite | None = None,
    ) -> None:
        """Train the (nodes, d) ``params`` (and ``momentum``) in place on ``batches``;
        with ``noisy``, every step is a private one (clipped per example, noised), and
        ``rewrite`` transforms every step's gradient."""
        # Real examples fill a prefix of each batch (fedsim.training.schedule), so one
        # host-side count per (node, step) replaces boolean indexing in the loop.
        counts = batches.mask.sum(dim=-1).to(torch.int64).tolist()
        for node, node_counts in enumerate(counts):
            self.flat.copy_(params[node])
            if self.flat_momentum is not None:
                self.flat_momentum.copy_(momentum[node])
            for step, count in enumerate(node_counts):
                if count == 0:
                    continue
                if noisy is None:
                    indices = batches.indices[node, step, :count]
                    self.sgd.zero_grad()
                    F.cross_entropy(self.model(train_x[indices]), train_y[indices]).backward()
                else:
                    self._noisy_gradient(noisy, batches, train_x, train_y, node, step)
                if rewrite is not None:
                    self._set_gradient(rewrite(self._gradient()[None], self.flat[None], node)[0])
                self.sgd.step()
            params[node] = self.flat
            if self.flat_momentum is not None:
                momentum[node] = self.flat_momentum

    def _noisy_gradient(
        self,
        noisy: NoisyGradients,
        batches: Batches,
        train_x: torch.Tensor,
        train_y: torch.Tensor,
        node: int,
        step: int,
    ) -> None:
        """Set the model's gradients to node ``node``'s private gradient at ``step``."""
        indices = batches.indices[node : node + 1, step]
        gradient = noisy(
            self.flat[None],
            train_x[indices],
            train_y[indices],
            batches.mask[node : node + 1, step],
            step,
            torch.tensor([node], device=self.flat.device),
        )[0]
        self._set_gradient(gradient)

    def _gradient(self) -> torch.Tensor:
        """The model's gradient as one flat vector."""
        return torch.cat([weight.grad.reshape(-1) for weight in self.weights])

    def _set_gradient(self, gradient: torch.Tensor) -> None:
        """Make the flat ``gradient`` the model's gradients."""
        views = self.layout.unflatten(gradient).values()
        for weight, view in zip(self.weights, views, strict=True):
            weight.grad = view
