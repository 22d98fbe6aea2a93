"""The map between a model's named parameters and one flat row of the federation tensor."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from fedsim.errors import ConfigError


@dataclass(frozen=True)
class ParameterLayout:
    """Names, shapes and offsets of a model's parameters inside a flat vector."""

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]

    @classmethod
    def of(cls, model: nn.Module) -> ParameterLayout:
        """The layout of ``model``'s parameters (buffers are not supported yet)."""
        buffers = [name for name, _ in model.named_buffers()]
        if buffers:
            raise ConfigError(
                f"model has buffers {buffers} (e.g. batch-norm statistics), which fedsim does not "
                "simulate yet; choose a model without them (e.g. group norm instead of batch norm)"
            )
        named = list(model.named_parameters())
        return cls(tuple(name for name, _ in named), tuple(tuple(p.shape) for _, p in named))

    @property
    def size(self) -> int:
        """Number of scalars in one flat parameter vector (d)."""
        return sum(math.prod(shape) for shape in self.shapes)

    def flatten(self, model: nn.Module) -> torch.Tensor:
        """``model``'s parameters as one flat float32 vector."""
        return torch.cat([p.detach().reshape(-1) for p in model.parameters()]).float()

    def unflatten(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """Views of ``flat[..., :]`` shaped as the named parameters (leading dims kept)."""
        views, offset = {}, 0
        lead = flat.shape[:-1]
        for name, shape in zip(self.names, self.shapes, strict=True):
            numel = math.prod(shape)
            views[name] = flat[..., offset : offset + numel].view(*lead, *shape)
            offset += numel
        return views
