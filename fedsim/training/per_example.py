"""Per-example gradients of many nodes at once, for gradient transforms that need them
(DP-SGD's clipping, :class:`fedsim.training.transforms.PerExampleTransform`).

``grad`` of one example's loss from ``torch.func``, ``vmap`` over the examples of a batch
inside ``vmap`` over the nodes.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property

import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from fedsim.training.layout import ParameterLayout


class PerExampleGradients:
    """Each node's gradient of each of its batch's examples' losses: (nodes, B, d).

    Built on first use: ``torch.func.grad``'s first call costs about a second of imports,
    which a run without per-example transforms should not pay.
    """

    def __init__(self, model: nn.Module, layout: ParameterLayout) -> None:
        self.model, self.layout = model, layout

    @cached_property
    def _per_example(self) -> Callable[..., torch.Tensor]:
        model, layout = self.model, self.layout

        def example_loss(flat: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            logits = functional_call(model, layout.unflatten(flat), (x[None],))
            return -logits.log_softmax(dim=-1)[0].gather(0, y[None])[0]

        return vmap(vmap(grad(example_loss), in_dims=(None, 0, 0)))

    def __call__(self, params: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``params`` (nodes, d) and a batch ``x`` (nodes, B, ...), ``y`` (nodes, B)."""
        with torch.enable_grad():
            return self._per_example(params.detach(), x, y)
