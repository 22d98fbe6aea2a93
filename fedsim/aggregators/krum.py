"""Krum and Multi-Krum: keep the received models that lie closest to their nearest others."""

from __future__ import annotations

import torch

from fedsim.aggregators.mean import Mean
from fedsim.errors import check


def squared_distances(rows: torch.Tensor) -> torch.Tensor:
    """(targets, k, k) squared Euclidean distances between the ``rows`` (targets, k, d) of
    each target, infinite on the diagonal (a model is not its own neighbour)."""
    # Direct differences, not the Gram-matrix shortcut, which loses the small distances
    # between similar models to cancellation in float32.
    distances = torch.cdist(rows, rows, compute_mode="donot_use_mm_for_euclid_dist").square()
    distances.diagonal(dim1=1, dim2=2).fill_(torch.inf)
    return distances


def krum_scores(distances: torch.Tensor, neighbours: int) -> torch.Tensor:
    """(targets, k) Krum scores: each model's sum of squared distances to its ``neighbours``
    closest others, from the (targets, k, k) ``distances`` of :func:`squared_distances`."""
    return distances.sort(dim=2).values[:, :, :neighbours].sum(dim=2)


def ranking(
    distances: torch.Tensor, neighbours: int, excluded: torch.Tensor | None = None
) -> torch.Tensor:
    """(targets, k) indices of the models best first: by Krum score, equal scores by the sum of
    the finite squared distances to all others, then by position; the ``excluded`` (targets,
    k) last.

    The second key keeps the choice independent of the order the models arrive in (which
    differs between backends) where scores tie exactly, as those of two models that are each
    other's nearest do when one neighbour counts.
    """
    scores = krum_scores(distances, neighbours)
    if excluded is not None:
        scores = scores.masked_fill(excluded, torch.inf)
    # summed in sorted order, which is the same in any order of arrival
    totals = distances.sort(dim=2).values.nan_to_num(posinf=0.0).sum(dim=2)
    by_total = totals.argsort(dim=1, stable=True)
    return by_total.gather(1, scores.gather(1, by_total).argsort(dim=1, stable=True))


def gather(rows: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
    """The (targets, m, d) rows at the (targets, m) indices ``chosen`` into ``rows``'s dim 1."""
    return rows[torch.arange(len(rows), device=rows.device)[:, None], chosen]


class Krum(Mean):
    """Keep the one received model whose ``k - f - 2`` closest other models are nearest (the
    least sum of squared distances), for ``k`` models received, the aggregator's own among
    them in gossip.  Blanchard, El Mhamdi, Guerraoui and Stainer, "Machine Learning with
    Adversaries: Byzantine Tolerant Gradient Descent", NeurIPS 2017.

    ``f`` is the number of Byzantine senders assumed among the models a node receives; Krum
    needs ``k > 2f + 2``, else :class:`~fedsim.errors.ConfigError`.  The weights are ignored:
    a Byzantine sender could claim any.  Equal scores: see :func:`ranking`.
    """

    combines_rows = True

    def __init__(self, f: int = 1):
        check(f >= 0, f"aggregator.f={f} must be >= 0")
        self.f = f

    def assumed_byzantine(self) -> int:
        return self.f

    def check_received(self, count: int) -> None:
        """Raise :class:`~fedsim.errors.ConfigError` unless ``count`` received models are enough."""
        needed = 2 * self.f + 2
        check(
            count > needed,
            f"aggregator.f={self.f} needs more than 2f + 2 = {needed} models per receiver, but "
            f"one received {count}: lower aggregator.f or give each receiver more models",
        )

    def kept(self, count: int) -> int:
        """How many of ``count`` received models are averaged: Krum keeps one."""
        return 1

    def combine(self, rows: torch.Tensor, weights: torch.Tensor, own: torch.Tensor) -> torch.Tensor:
        """(targets, d): the mean of the best-scored models of ``rows`` (targets, k, d); the
        ``weights`` (targets, k) and the targets' ``own`` rows (targets, d) are unused."""
        count = rows.shape[1]
        self.check_received(count)
        best = ranking(squared_distances(rows), count - self.f - 2)
        return gather(rows, best[:, : self.kept(count)]).mean(dim=1)


class MultiKrum(Krum):
    """Krum that averages (uniformly) the ``m`` best-scored models instead of keeping one;
    ``m=None`` keeps ``k - f`` of the ``k`` received (as many as can all be honest), and
    ``m=1`` is Krum.  The scores are computed once, over all models received.  ``m`` may not
    exceed ``k - f``, else :class:`~fedsim.errors.ConfigError`.
    """

    def __init__(self, f: int = 1, m: int | None = None):
        super().__init__(f)
        check(m is None or m >= 1, f"aggregator.m={m} must be >= 1 (or null: k - f)")
        self.m = m

    def check_received(self, count: int) -> None:
        """Krum's check, and ``m <= count - f``."""
        super().check_received(count)
        check(
            self.kept(count) <= count - self.f,
            f"aggregator.m={self.m} exceeds received - f = {count - self.f} (a receiver got "
            f"{count} models, aggregator.f={self.f}): lower aggregator.m",
        )

    def kept(self, count: int) -> int:
        """``m``, or ``count - f`` when ``m`` is None."""
        return count - self.f if self.m is None else self.m
