"""The coordinate-wise trimmed mean of the received models."""

from __future__ import annotations

import math

import torch

from fedsim.aggregators.mean import Mean
from fedsim.errors import check


class TrimmedMean(Mean):
    """Each coordinate becomes the mean of that coordinate over the models received (the
    aggregator's own model among them, in gossip) after the ``b`` largest and the ``b``
    smallest values are dropped, ``b = floor(beta * k)`` for ``k`` models received; the weights
    are ignored.  Yin, Chen, Ramchandran and Bartlett, "Byzantine-Robust Distributed Learning:
    Towards Optimal Statistical Rates", ICML 2018 (the beta-trimmed mean).

    ``beta`` is a fraction rather than a count because in gossip the number of models received
    differs from node to node; ``beta < 0.5`` always leaves at least one value.  To tolerate
    ``f`` Byzantine senders among ``k``, choose ``beta >= f / k``.  ``beta=0`` is the
    unweighted mean.
    """

    combines_rows = True

    def __init__(self, beta: float = 0.2):
        check(0 <= beta < 0.5, f"aggregator.beta={beta} must be in [0, 0.5)")
        self.beta = beta

    def trimmed(self, count: int) -> int:
        """How many values are dropped from each end when ``count`` models are received."""
        return math.floor(self.beta * count + 1e-9)  # 0.29 * 100 is 28.999...: still 29

    def combine(self, rows: torch.Tensor, weights: torch.Tensor, own: torch.Tensor) -> torch.Tensor:
        """(targets, d) trimmed means of ``rows`` (targets, k, d); the ``weights`` (targets, k)
        and the targets' ``own`` current rows (targets, d) are unused."""
        count = rows.shape[1]
        dropped = self.trimmed(count)
        return rows.sort(dim=1).values[:, dropped : count - dropped].mean(dim=1)
