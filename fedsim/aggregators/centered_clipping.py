"""Centered clipping: move from a trusted centre by the received models' clipped offsets."""

from __future__ import annotations

import torch

from fedsim.aggregators.geometric_median import distances_to, normalised
from fedsim.aggregators.mean import Mean
from fedsim.errors import check


class CenteredClipping(Mean):
    """``iterations`` times ``v <- v + sum_i alpha_i clip(x_i - v, tau)``, ``clip(u, tau) = u
    min(1, tau / ||u||)``, over the models ``x_i`` received, from ``v`` = the receiver's own
    current model.  Karimireddy, He and Jaggi, "Learning from History for Byzantine Robust
    Optimization", ICML 2021.

    The centre: at an FL server its model before this round's aggregate, i.e. the previous
    global model (the paper's previous aggregate), so each client's update is clipped to norm
    ``tau``; in gossip the node's own model, which with ``iterations=1`` is ClippedGossip with
    a fixed radius (He, Karimireddy and Jaggi 2022): ``x_i + sum_j w_ij clip(x_j - x_i, tau)``.

    ``alpha`` are the plan's weights normalised per receiver (the paper's ``1 / n`` when they
    are uniform), so that ``tau = inf`` gives, in one iteration, exactly the average that
    ``aggregator=mean`` would; ``tau = 0`` keeps the centre.  Each step moves ``v`` by at most
    ``tau``.
    """

    combines_rows = True

    def __init__(self, tau: float = 1.0, iterations: int = 1):
        check(tau >= 0, f"aggregator.tau={tau} must be >= 0")
        check(iterations >= 1, f"aggregator.iterations={iterations} must be >= 1")
        self.tau, self.iterations = tau, iterations

    def combine(self, rows: torch.Tensor, weights: torch.Tensor, own: torch.Tensor) -> torch.Tensor:
        """(targets, d): each target's ``own`` row (targets, d) moved by the clipped weighted
        offsets to its ``rows`` (targets, k, d), under ``weights`` (targets, k)."""
        alphas, centre = normalised(weights, rows), own.to(rows.dtype)
        tiny = torch.finfo(rows.dtype).tiny
        for _ in range(self.iterations):
            distances = distances_to(centre, rows)
            scales = (self.radius(distances) / distances.clamp_min(tiny)).clamp(max=1)
            shares = alphas * scales  # v + sum_i s_i (x_i - v), without a (targets, k, d) copy
            centre = centre * (1 - shares.sum(dim=1, keepdim=True)) + torch.einsum(
                "tk,tkd->td", shares, rows
            )
        return centre

    def radius(self, distances: torch.Tensor) -> torch.Tensor | float:
        """The clipping radius of each target, from the (targets, k) ``distances`` of its rows
        to its centre: ``tau`` for all."""
        return self.tau
