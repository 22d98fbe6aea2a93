"""Bulyan: Krum's selection, repeated, then a coordinate-wise average around the median."""

from __future__ import annotations

import torch

from fedsim.aggregators.krum import gather, ranking, squared_distances
from fedsim.aggregators.mean import Mean
from fedsim.errors import check


class Bulyan(Mean):
    """Of ``k`` models received (the aggregator's own among them, in gossip), select
    ``theta = k - 2f`` by Krum, one at a time, each time among those not yet selected; then
    each coordinate becomes the mean of the ``beta = theta - 2f`` selected values closest to
    their median (the mean of the two middle ones when ``theta`` is even).  El Mhamdi,
    Guerraoui and Rouault, "The Hidden Vulnerability of Distributed Learning in Byzantium",
    ICML 2018.

    Needs ``k >= 4f + 3``, else :class:`~fedsim.errors.ConfigError`.  Each Krum step among
    ``r`` remaining models scores a model by its ``r - f - 2`` closest remaining others, at
    least one (the paper's count reaches 0 in the last step when ``f = 1``).  The weights are
    ignored; equal scores: see :func:`~fedsim.aggregators.krum.ranking`.
    """

    combines_rows = True

    def __init__(self, f: int = 1):
        check(f >= 0, f"aggregator.f={f} must be >= 0")
        self.f = f

    def assumed_byzantine(self) -> int:
        return self.f

    def check_received(self, count: int) -> None:
        """Raise :class:`~fedsim.errors.ConfigError` unless ``count`` received models are enough."""
        needed = 4 * self.f + 3
        check(
            count >= needed,
            f"aggregator.f={self.f} needs at least 4f + 3 = {needed} models per receiver, but "
            f"one received {count}: lower aggregator.f or give each receiver more models",
        )

    def selected(self, rows: torch.Tensor) -> torch.Tensor:
        """(targets, theta) indices into ``rows`` (targets, k, d), in the order Krum chose them."""
        count = rows.shape[1]
        distances = squared_distances(rows)
        targets = torch.arange(len(rows), device=rows.device)
        removed = torch.zeros(rows.shape[:2], dtype=torch.bool, device=rows.device)
        chosen = []
        for remaining in range(count, 2 * self.f, -1):
            neighbours = min(max(remaining - self.f - 2, 1), remaining - 1)
            best = ranking(distances, neighbours, removed)[:, 0]
            chosen.append(best)
            removed[targets, best] = True
            distances[targets, best] = torch.inf  # no longer anyone's neighbour
            distances[targets, :, best] = torch.inf
        return torch.stack(chosen, dim=1)

    def combine(self, rows: torch.Tensor, weights: torch.Tensor, own: torch.Tensor) -> torch.Tensor:
        """(targets, d) Bulyan aggregates of ``rows`` (targets, k, d); the ``weights``
        (targets, k) and the targets' ``own`` rows (targets, d) are unused."""
        self.check_received(rows.shape[1])
        chosen = gather(rows, self.selected(rows))  # (targets, theta, d)
        theta = chosen.shape[1]
        ordered = chosen.sort(dim=1).values
        median = (ordered[:, (theta - 1) // 2] + ordered[:, theta // 2]) / 2
        closest = (chosen - median[:, None]).abs().argsort(dim=1, stable=True)
        return chosen.gather(1, closest[:, : theta - 2 * self.f]).mean(dim=1)
