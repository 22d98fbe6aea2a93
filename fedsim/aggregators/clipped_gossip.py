"""ClippedGossip: a node moves towards its neighbours by their offsets clipped to a radius."""

from __future__ import annotations

import torch

from fedsim.aggregators.centered_clipping import CenteredClipping
from fedsim.errors import check


class ClippedGossip(CenteredClipping):
    """``x_i + sum_j w_ij clip(x_j - x_i, tau_i)`` over the models ``x_j`` node i receives
    (its own among them), ``w`` the mixing weights: self-centred clipping, He, Karimireddy
    and Jaggi, "Byzantine-robust Decentralized Learning via ClippedGossip", 2022 (arXiv
    2202.01545).

    With ``tau`` given, every node clips at that radius (centered clipping of one iteration
    from the own model).  With ``tau=None`` the radius is adaptive, as in the authors' code
    (``SelfCenteredClipping``): ``tau_i`` is the second-largest distance from node i to the
    models it received, the largest when it received only one, so that only the farthest
    neighbour is clipped, down to the second-farthest's distance.  At an FL server (whose own
    model is not among the rows) the same rule takes the second-largest of the clients'.
    """

    def __init__(self, tau: float | None = None):
        check(tau is None or tau >= 0, f"aggregator.tau={tau} must be >= 0 or null (adaptive)")
        super().__init__(tau=0.0 if tau is None else tau, iterations=1)
        self.adaptive = tau is None

    def radius(self, distances: torch.Tensor) -> torch.Tensor | float:
        if not self.adaptive:
            return self.tau
        # In gossip the rows hold the own model (distance 0) and the neighbours': with two
        # or more neighbours the second-largest distance is a neighbour's, with one the
        # largest is.
        largest = distances.topk(min(2, distances.shape[1]), dim=1).values
        return largest[:, -1:] if distances.shape[1] > 2 else largest[:, :1]
