"""Noisy local steps: per-example clipped gradient sums plus the privacy noise, over the batch.

DP-SGD (Abadi et al., CCS 2016) as CorN-DSGD applies it (Rodio et al. 2025, spec section 3):
``x_i <- x_i - lr (sum_s clip_C(g_s) + n_i) / B`` with ``clip_C(g) = g min(1, C / ||g||)``,
the norm taken over all parameters jointly, the noise added to the *sum* before the
division by the batch size B.  Per-example gradients come from ``torch.func``: ``grad`` of
one example's loss, ``vmap`` over the examples of a batch inside ``vmap`` over the nodes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from fedsim.training.layout import ParameterLayout


class ClippedGradients:
    """Each node's sum of per-example gradients clipped to norm ``clip``: (nodes, d)."""

    def __init__(self, model: nn.Module, layout: ParameterLayout) -> None:
        def example_loss(flat: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            logits = functional_call(model, layout.unflatten(flat), (x[None],))
            return -logits.log_softmax(dim=-1)[0].gather(0, y[None])[0]

        examples = vmap(grad(example_loss), in_dims=(None, 0, 0))
        self._per_example = vmap(examples)

    def __call__(
        self,
        params: torch.Tensor,
        x: torch.Tensor,
        y: torch.Tensor,
        weight: torch.Tensor,
        clip: float,
    ) -> torch.Tensor:
        """``params`` (nodes, d), a batch ``x`` (nodes, B, ...) and ``y`` (nodes, B), with
        ``weight`` (nodes, B) 1.0 for real examples and 0.0 for padding."""
        with torch.enable_grad():
            per_example = self._per_example(params.detach(), x, y)  # (nodes, B, d)
        norms = per_example.norm(dim=-1)
        factors = (clip / norms.clamp_min(torch.finfo(norms.dtype).tiny)).clamp(max=1.0) * weight
        return torch.einsum("nb,nbd->nd", factors, per_example)


@dataclass(frozen=True)
class NoisyGradients:
    """The gradients a private step applies: ``(clipped sums + noise) / batch_size``.

    ``noise(step, positions)`` gives the noise of the nodes at ``positions`` of the chunk
    being trained, at local step ``step``.
    """

    clipped: ClippedGradients
    clip: float
    batch_size: int
    noise: Callable[[int, torch.Tensor], torch.Tensor]

    def __call__(
        self,
        params: torch.Tensor,
        x: torch.Tensor,
        y: torch.Tensor,
        weight: torch.Tensor,
        step: int,
        positions: torch.Tensor,
    ) -> torch.Tensor:
        sums = self.clipped(params, x, y, weight, self.clip)
        noise = self.noise(step, positions).to(sums.dtype)
        return (sums + noise) / self.batch_size
