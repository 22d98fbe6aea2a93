"""The geometric median of the received models by the smoothed Weiszfeld algorithm (RFA)."""

from __future__ import annotations

import torch

from fedsim.aggregators.mean import Mean
from fedsim.errors import check


def distances_to(points: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """(targets, k) Euclidean distances from each target's point (targets, d) to its ``rows``
    (targets, k, d), without a (targets, k, d) temporary."""
    return torch.cdist(points[:, None], rows, compute_mode="donot_use_mm_for_euclid_dist")[:, 0]


def normalised(weights: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """The (targets, k) ``weights`` in ``like``'s dtype, each target's summing to one."""
    weights = weights.to(like.dtype)
    return weights / weights.sum(dim=1, keepdim=True)


class GeometricMedian(Mean):
    """The weighted geometric median ``argmin_z sum_i alpha_i ||z - x_i||`` of the models
    received (the aggregator's own among them, in gossip), ``alpha`` the plan's weights
    normalised per receiver, approximated by the smoothed Weiszfeld algorithm of RFA:
    Pillutla, Kakade and Harchaoui, "Robust Aggregation for Federated Learning", IEEE
    Transactions on Signal Processing 2022.

    From the weighted mean, ``iterations`` times: ``beta_i = alpha_i / max(epsilon, ||z -
    x_i||)``, ``z <- sum_i beta_i x_i / sum_i beta_i``.  The defaults are the authors' code's
    (5 passes, the first the weighted mean; smoothing 1e-6); ``iterations=0`` is the weighted
    mean.  ``epsilon`` bounds each weight where ``z`` nears a model, which the plain Weiszfeld
    step divides by zero at.
    """

    combines_rows = True

    def __init__(self, iterations: int = 4, epsilon: float = 1e-6):
        check(iterations >= 0, f"aggregator.iterations={iterations} must be >= 0")
        check(epsilon > 0, f"aggregator.epsilon={epsilon} must be > 0")
        self.iterations, self.epsilon = iterations, epsilon

    def combine(self, rows: torch.Tensor, weights: torch.Tensor, own: torch.Tensor) -> torch.Tensor:
        """(targets, d) geometric medians of ``rows`` (targets, k, d) under ``weights``
        (targets, k); the targets' ``own`` rows (targets, d) are unused."""
        alphas = normalised(weights, rows)
        median = torch.einsum("tk,tkd->td", alphas, rows)
        for _ in range(self.iterations):
            betas = alphas / distances_to(median, rows).clamp_min(self.epsilon)
            median = torch.einsum("tk,tkd->td", betas, rows) / betas.sum(dim=1, keepdim=True)
        return median
