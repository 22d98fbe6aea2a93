"""Local training one node at a time: the plain reference that the vectorised path must equal."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from fedsim.training.layout import ParameterLayout
from fedsim.training.optimizer import LocalOptimizer, OptimizerState
from fedsim.training.per_example import PerExampleGradients
from fedsim.training.schedule import Batches
from fedsim.training.transforms import Rewrite


class LoopTrainer:
    """For each node: load its row into a model, run the optimizer's ``torch.optim`` twin
    (``torch.optim.SGD``, ``Adam``, ``AdamW``) over its batches, store it.

    The same batches as :class:`~fedsim.training.vectorised.VectorisedTrainer`, with the
    textbook training loop.  Faster than vmap for compute-bound models (convolutions on CPU).
    The model's parameters and each (nodes, d) state of the optimizer (SGD's momentum
    buffers, Adam's moments) are views of one flat vector each, so loading and storing a
    node is one copy; a per-row counter (Adam's step) is copied into every weight's state.
    """

    def __init__(
        self, model: nn.Module, layout: ParameterLayout, optimizer: LocalOptimizer
    ) -> None:
        self.model = copy.deepcopy(model)
        self.layout = layout
        self.weights = list(self.model.parameters())
        self.flat = layout.flatten(self.model).clone()
        for weight, view in zip(self.weights, layout.unflatten(self.flat).values(), strict=True):
            weight.data = view
        self.per_example = PerExampleGradients(model, layout)
        self.optimizer = optimizer.torch_optimizer(self.weights)
        self.base_lr = optimizer.lr
        self.keys = optimizer.torch_keys
        self.flat_state = optimizer.init(self.flat[None])  # (1, d) rows, (1,) counters
        for name, flat in self.flat_state.items():
            views = (
                list(layout.unflatten(flat[0]).values())
                if flat.dim() == 2
                else [torch.zeros(()) for _ in self.weights]  # a counter, as torch.optim's step
            )
            for weight, view in zip(self.weights, views, strict=True):
                self.optimizer.state[weight][self.keys[name]] = view

    def train(
        self,
        params: torch.Tensor,
        state: OptimizerState | None,
        batches: Batches,
        train_x: torch.Tensor,
        train_y: torch.Tensor,
        rewrite: Rewrite | None = None,
        lr: torch.Tensor | None = None,
    ) -> None:
        """Train the (nodes, d) ``params`` and their optimizer ``state`` in place on
        ``batches``, at the (nodes, steps) rates ``lr`` (``optimizer.lr`` by default);
        ``rewrite`` transforms every step's gradient (from per-example gradients, when its
        chain starts with a per-example transform)."""
        state = {} if state is None else state
        # Real examples fill a prefix of each batch (fedsim.training.schedule), so one
        # host-side count per (node, step) replaces boolean indexing in the loop.
        counts = batches.mask.sum(dim=-1).to(torch.int64).tolist()
        rates = None if lr is None else lr.tolist()
        group = self.optimizer.param_groups[0]
        group["lr"] = self.base_lr
        per_example = rewrite is not None and rewrite.per_example is not None
        zeroth_order = rewrite is not None and rewrite.zeroth_order is not None
        for node, node_counts in enumerate(counts):
            self.flat.copy_(params[node])
            self._load_state(state, node)
            for step, count in enumerate(node_counts):
                if count == 0:
                    continue
                indices = batches.indices[node, step, :count]
                if zeroth_order:
                    x, y = train_x[indices], train_y[indices]

                    def loss_at(points: torch.Tensor) -> torch.Tensor:
                        return self._loss_at(points[0], x, y)[None]  # noqa: B023

                    estimate = rewrite.estimate(self.flat[None], loss_at, step, node)
                    self._set_gradient(estimate[0])
                elif per_example:
                    self._per_example_gradient(rewrite, batches, train_x, train_y, node, step)
                else:
                    self._backward(train_x[indices], train_y[indices])
                if rewrite is not None:
                    x, y = train_x[indices], train_y[indices]

                    def gradient_at(points: torch.Tensor) -> torch.Tensor:
                        return self._gradient_at(points[0], x, y)[None]  # noqa: B023

                    grads = rewrite(self._gradient()[None], self.flat[None], node, gradient_at)
                    self._set_gradient(grads[0])
                if rates is not None:
                    group["lr"] = rates[node][step]
                self.optimizer.step()
            params[node] = self.flat
            self._store_state(state, node)

    def _load_state(self, state: OptimizerState, node: int) -> None:
        """Make ``node``'s optimizer state the torch optimizer's."""
        for name, flat in self.flat_state.items():
            if flat.dim() == 2:
                flat[0].copy_(state[name][node])
            else:
                for weight in self.weights:
                    self.optimizer.state[weight][self.keys[name]].fill_(float(state[name][node]))

    def _store_state(self, state: OptimizerState, node: int) -> None:
        """Write the torch optimizer's state back to ``node``'s rows of ``state``."""
        for name, flat in self.flat_state.items():
            if flat.dim() == 2:
                state[name][node] = flat[0]
            else:
                state[name][node] = self.optimizer.state[self.weights[0]][self.keys[name]]

    def _per_example_gradient(
        self,
        rewrite: Rewrite,
        batches: Batches,
        train_x: torch.Tensor,
        train_y: torch.Tensor,
        node: int,
        step: int,
    ) -> None:
        """Set the model's gradients to what the per-example transform of ``rewrite`` makes
        of node ``node``'s per-example gradients at ``step``."""
        indices = batches.indices[node : node + 1, step]
        per_example = self.per_example(self.flat[None], train_x[indices], train_y[indices])
        weight = batches.mask[node : node + 1, step]
        self._set_gradient(rewrite.reduce(per_example, weight, step, node)[0])

    def _backward(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """The model's gradients of its mean loss on ``x``, ``y``."""
        self.optimizer.zero_grad()
        F.cross_entropy(self.model(x), y).backward()

    @torch.no_grad()
    def _loss_at(self, point: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The mean loss on ``x``, ``y`` at the flat ``point``, a forward pass alone; the
        model's parameters are left as they were."""
        here = self.flat.clone()
        self.flat.copy_(point)
        loss = F.cross_entropy(self.model(x), y)
        self.flat.copy_(here)
        return loss

    def _gradient_at(self, point: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The flat gradient of the mean loss on ``x``, ``y`` at the flat ``point``; the
        model's parameters are left as they were."""
        here = self.flat.clone()
        self.flat.copy_(point)
        self._backward(x, y)
        gradient = self._gradient()
        self.flat.copy_(here)
        return gradient

    def _gradient(self) -> torch.Tensor:
        """The model's gradient as one flat vector."""
        return torch.cat([weight.grad.reshape(-1) for weight in self.weights])

    def _set_gradient(self, gradient: torch.Tensor) -> None:
        """Make the flat ``gradient`` the model's gradients."""
        views = self.layout.unflatten(gradient).values()
        for weight, view in zip(self.weights, views, strict=True):
            weight.grad = view
