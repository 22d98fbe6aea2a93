"""The coordinate-wise median of the received models."""

from __future__ import annotations

import torch

from fedsim.aggregators.mean import Mean


class Median(Mean):
    """Each coordinate becomes the median of that coordinate over the models received (the
    aggregator's own model among them, in gossip), the mean of the two middle values when
    their number is even; the weights are ignored.  Yin, Chen, Ramchandran and Bartlett,
    "Byzantine-Robust Distributed Learning: Towards Optimal Statistical Rates", ICML 2018.
    """

    combines_rows = True

    def combine(self, rows: torch.Tensor, weights: torch.Tensor, own: torch.Tensor) -> torch.Tensor:
        """(targets, d) medians of ``rows`` (targets, k, d); the ``weights`` (targets, k) and
        the targets' ``own`` current rows (targets, d) are unused."""
        ordered = rows.sort(dim=1).values
        count = rows.shape[1]
        middle = ordered[:, (count - 1) // 2]
        return middle if count % 2 else (middle + ordered[:, count // 2]) / 2
