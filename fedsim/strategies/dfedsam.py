"""DFedSAM and DFedSAM-MGS: D-PSGD whose local steps are sharpness-aware, then Q gossip steps."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from fedsim.errors import check
from fedsim.plans import Gossip, RoundPlan
from fedsim.strategies.base import Federation
from fedsim.strategies.dpsgd import DPSGD
from fedsim.training.transforms import GradientAt, GradientTransform


@dataclass(frozen=True)
class SharpnessAware(GradientTransform):
    """SAM (Foret et al., "Sharpness-Aware Minimization for Efficiently Improving
    Generalization", ICLR 2021): step with the gradient at ``y + rho g / ||g||``, on the same
    mini-batch, g the gradient at y (the norm over all of a node's parameters)."""

    rho: float
    reevaluates = True

    def reevaluate(
        self, grads: torch.Tensor, params: torch.Tensor, gradient_at: GradientAt
    ) -> torch.Tensor:
        norms = grads.norm(dim=1, keepdim=True)
        ascent = self.rho * grads / norms.clamp_min(torch.finfo(norms.dtype).tiny)
        return gradient_at(params + ascent)


class DFedSAM(DPSGD):
    """DFedSAM and DFedSAM-MGS (Shi et al., "Improving the Model Consistency of
    Decentralized Federated Learning", ICML 2023).

    Every node takes its local steps with SAM (:class:`SharpnessAware`, radius ``rho``),
    then the nodes gossip ``gossip_steps`` times (Q) through the round's W on the trained
    models: ``X <- W^Q Y``, Q times the messages of one step.  Q = 1 is DFedSAM, Q > 1
    DFedSAM-MGS; ``rho = 0`` is D-PSGD (adapt then combine) exactly.
    """

    def __init__(
        self,
        rho: float = 0.05,
        gossip_steps: int = 1,
        local_epochs: int | None = 1,
        local_steps: int | None = None,
    ) -> None:
        super().__init__(local_epochs, local_steps)
        check(rho >= 0, f"strategy.rho={rho} must be >= 0")
        check(gossip_steps >= 1, f"strategy.gossip_steps={gossip_steps} must be >= 1")
        self.rho, self.gossip_steps = rho, gossip_steps

    def plan(self, round_idx: int, federation: Federation) -> RoundPlan:
        everyone = np.arange(federation.num_nodes)
        train = self._train(everyone, transforms=(SharpnessAware(self.rho),))
        mixing = Gossip(federation.topology.mixing(round_idx))
        return RoundPlan(steps=(train, *[mixing] * self.gossip_steps))
