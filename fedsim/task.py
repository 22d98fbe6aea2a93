"""A learning task: the model, the data held by each node and the local optimizer."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch
from torch import nn

from fedsim.data.datasets import Dataset
from fedsim.training.layout import ParameterLayout
from fedsim.training.schedule import NodeData
from fedsim.training.sgd import SGD


@dataclass(frozen=True, eq=False)
class Task:
    """Everything local training needs, on one device.

    ``model`` is a template: its parameters are the common initial model, and training
    runs it functionally on rows of the federation tensor.
    """

    model: nn.Module
    dataset: Dataset
    node_data: NodeData
    optimizer: SGD
    seed: int

    @cached_property
    def layout(self) -> ParameterLayout:
        return ParameterLayout.of(self.model)

    @property
    def device(self) -> torch.device:
        return self.dataset.train_x.device

    def initial_params(self) -> torch.Tensor:
        """The model's initial parameters as one flat vector."""
        return self.layout.flatten(self.model).to(self.device)

    def prefers_vectorised(self) -> bool:
        """vmap over nodes pays off for matrix-multiply models, not for convolutions on CPU."""
        has_conv = any(isinstance(m, nn.modules.conv._ConvNd) for m in self.model.modules())
        return not has_conv or self.device.type == "cuda"
