"""Exact Diffusion: diffusion (adapt, then combine) with a correction that removes its bias."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import scipy.sparse as sp
import torch

from fedsim.errors import check
from fedsim.plans import Aggregate, Average, Gossip, RoundPlan, Train
from fedsim.strategies.base import Federation, Strategy
from fedsim.training.transforms import GradientTransform, Slots

ADAPTED = "adapted"  # per-row slot: psi_k, the node's model after its last local step
CORRECTED = "corrected"  # per-row slot: phi_k, the point the node sends to be mixed


@dataclass(frozen=True)
class Correct(GradientTransform):
    """Leaves every gradient as it is; after the round's step from x to psi = x - lr g keeps
    ``phi = psi + x - psi_last`` and ``psi`` (``first``: psi_last = x, so phi = psi)."""

    first: bool = False
    slots = (ADAPTED, CORRECTED)

    def finish(
        self,
        params: torch.Tensor,
        start: torch.Tensor,
        steps: torch.Tensor,
        lr: float | torch.Tensor,
        slots: Slots,
    ) -> None:
        last = start if self.first else slots[ADAPTED]
        slots[CORRECTED].copy_(params + (start - last))  # the small difference first: less rounding
        slots[ADAPTED].copy_(params)


def take_slot(nodes: np.ndarray, payload: str) -> Aggregate:
    """Each node's model becomes its own row of ``payload``; nothing is sent."""
    one = np.ones(1)
    return Aggregate(
        tuple(
            Average(np.array([node]), np.array([node]), one, payload=payload, into="params")
            for node in nodes
        )
    )


class ExactDiffusion(Strategy):
    """Exact Diffusion (Yuan, Ying, Zhao and Sayed, "Exact Diffusion for Distributed
    Optimization and Learning -- Part I", IEEE Trans. Signal Process. 2019), the
    adapt-correct-combine recursion with W_bar = (I + W) / 2 and psi_0 = x_0:

        psi_{k+1} = x_k - lr G(x_k)            (adapt: one local plain-SGD step)
        phi_{k+1} = psi_{k+1} + x_k - psi_k    (correct)
        x_{k+1}   = W_bar phi_{k+1}            (combine: gossip of phi, one message per edge)

    Equivalently x_{k+1} = W_bar (2 x_k - x_{k-1} - lr G(x_k) + lr G(x_{k-1})), D² with
    W_bar (strategy=d2).  With full gradients and a constant lr it reaches the exact
    optimum on heterogeneous data.  W must be symmetric and doubly stochastic; the
    recursion assumes plain SGD, so momentum (or Adam) is refused.

    Each round the nodes take their step (keeping psi and phi in per-row slots), take phi
    as their model (locally, nothing sent) and gossip it.
    """

    uses_topology = True
    barrier = True
    assumes_sgd: ClassVar[bool] = True  # fedsim.build refuses other local optimizers
    name: ClassVar[str] = "exact_diffusion"

    def validate(self, federation: Federation) -> None:
        check(
            federation.num_nodes >= 2,
            f"strategy={self.name} needs num_nodes >= 2, got {federation.num_nodes}",
        )
        check(
            federation.momentum == 0,
            f"strategy={self.name} assumes plain SGD; "
            f"optimizer.momentum={federation.momentum} must be 0",
        )
        federation.topology.require(
            f"strategy={self.name}", connected=True, doubly_stochastic=True, symmetric=True
        )

    def __init__(self) -> None:
        self._lazy: tuple[sp.csr_array, sp.csr_array] | None = None  # the last W and W_bar

    def mixing(self, round_idx: int, federation: Federation) -> sp.csr_array:
        """W_bar = (I + W) / 2 of the round's W (the same object while W repeats)."""
        weights = federation.topology.mixing(round_idx)
        if self._lazy is None or self._lazy[0] is not weights:
            identity = sp.eye_array(weights.shape[0], format="csr")
            self._lazy = (weights, sp.csr_array((identity + weights) / 2))
        return self._lazy[1]

    def plan(self, round_idx: int, federation: Federation) -> RoundPlan:
        everyone = np.arange(federation.num_nodes)
        correct = Correct(first=round_idx == 0)
        train = Train(everyone, steps=1, fresh_optimizer=False, transforms=(correct,))
        combine = Gossip(self.mixing(round_idx, federation))
        return RoundPlan(steps=(train, take_slot(everyone, CORRECTED), combine))
