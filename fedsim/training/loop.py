"""Local training one node at a time: the plain reference that the vectorised path must equal."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from fedsim.training.layout import ParameterLayout
from fedsim.training.schedule import Batches
from fedsim.training.sgd import SGD


class LoopTrainer:
    """For each node: load its row into a model, run ``torch.optim.SGD`` over its batches, store it.

    The same batches as :class:`~fedsim.training.vectorised.VectorisedTrainer`, the textbook
    training loop.  Faster than vmap for compute-bound models (convolutions on CPU).
    """

    def __init__(self, model: nn.Module, layout: ParameterLayout) -> None:
        self.model = copy.deepcopy(model)
        self.layout = layout

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
        weights = list(self.model.parameters())
        for node in range(params.shape[0]):
            torch.nn.utils.vector_to_parameters(params[node], weights)
            sgd = torch.optim.SGD(
                weights, lr=optimizer.lr, momentum=optimizer.momentum, weight_decay=optimizer.weight_decay
            )
            if momentum is not None and optimizer.momentum:
                buffers = self.layout.unflatten(momentum[node].clone())
                for name, weight in self.model.named_parameters():
                    sgd.state[weight]["momentum_buffer"] = buffers[name]
            for step in range(batches.num_steps):
                real = batches.mask[node, step] > 0
                if not real.any():
                    continue
                indices = batches.indices[node, step][real]
                sgd.zero_grad()
                F.cross_entropy(self.model(train_x[indices]), train_y[indices]).backward()
                sgd.step()
            params[node] = torch.nn.utils.parameters_to_vector(weights).detach()
            if momentum is not None and optimizer.momentum:
                momentum[node] = torch.cat([sgd.state[w]["momentum_buffer"].reshape(-1) for w in weights])
