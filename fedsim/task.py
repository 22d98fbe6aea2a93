"""A learning task: the model, the data held by each node, the local optimizer and its
learning-rate schedule."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from functools import cached_property

import numpy as np
import torch
from torch import nn

from fedsim import rng
from fedsim.data.datasets import Dataset
from fedsim.errors import check
from fedsim.models.init import initialize
from fedsim.training.layout import ParameterLayout
from fedsim.training.lr_schedule import Constant, LRSchedule
from fedsim.training.optimizer import LocalOptimizer
from fedsim.training.schedule import NodeData


@dataclass(frozen=True, eq=False)
class Task:
    """Everything local training needs, on one device.

    ``model`` is a template whose parameters are overwritten by each row's initial model:
    ``init="same"`` gives every row one model (the FL convention), ``"independent"`` a
    model of its own (gossip-learning studies), drawn with ``init_scheme`` from the seed.
    """

    model: nn.Module
    dataset: Dataset
    node_data: NodeData
    optimizer: LocalOptimizer
    seed: int
    init: str = "same"
    init_scheme: str = "default"
    lr_schedule: LRSchedule = field(default_factory=Constant)

    def __post_init__(self) -> None:
        check(
            self.init in ("same", "independent"),
            f"init={self.init} is not one of: same, independent",
        )

    @cached_property
    def layout(self) -> ParameterLayout:
        return ParameterLayout.of(self.model)

    @property
    def device(self) -> torch.device:
        return self.dataset.train_x.device

    def to(self, device: torch.device | str) -> Task:
        """The same task with its model and data on ``device`` (a Ray actor's own GPU)."""
        device = torch.device(device)
        if device == self.device:
            return self
        return replace(
            self,
            model=copy.deepcopy(self.model).to(device),
            dataset=self.dataset.to(device),
            node_data=self.node_data.to(device),
        )

    def initial_models(self, rows: np.ndarray) -> torch.Tensor:
        """The initial models of global ``rows``, shape (len(rows), d): the same one for all
        (``init="same"``) or each row's own, drawn from (seed, row)."""
        if self.init == "same":
            return self._same_initial_model.expand(len(rows), -1).clone()
        if not len(rows):
            return torch.empty(0, self.layout.size, device=self.device)
        return torch.stack(
            [self._initial_model(rng.generator(self.seed, rng.INIT, int(row))) for row in rows]
        )

    @cached_property
    def _same_initial_model(self) -> torch.Tensor:
        """The one initial model of ``init="same"``, made once (a backend with rows on demand
        asks for it every round)."""
        return self._initial_model(rng.generator(self.seed, rng.INIT))

    def _initial_model(self, source) -> torch.Tensor:
        generator = torch.Generator().manual_seed(int(source.integers(1 << 62)))
        initialize(self.model, self.init_scheme, generator)
        return self.layout.flatten(self.model).to(self.device)

    def prefers_vectorised(self) -> bool:
        """vmap over nodes pays off for matrix-multiply models, not for convolutions on CPU."""
        has_conv = any(isinstance(m, nn.modules.conv._ConvNd) for m in self.model.modules())
        return not has_conv or self.device.type == "cuda"
