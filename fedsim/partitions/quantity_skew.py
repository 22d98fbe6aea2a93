"""Quantity skew: IID labels, node sizes drawn from a Dirichlet distribution."""

from __future__ import annotations

import numpy as np

from fedsim import rng
from fedsim.errors import check


def quantity_skew(
    labels: np.ndarray,
    num_nodes: int,
    seed: int,
    alpha: float = 0.5,
    min_samples_per_node: int = 1,
) -> list[np.ndarray]:
    """Shuffle the examples and deal them out in sizes proportional to ``Dir(alpha)`` draws.

    The quantity skew of NIID-Bench, Li, Diao, Chen and He (2022), "Federated Learning on
    Non-IID Data Silos: An Experimental Study": labels stay IID, only the amounts differ.
    Every node first gets ``min_samples_per_node`` examples and the rest is split in
    proportions ``q ~ Dir(alpha * 1_n)`` (cuts at ``floor(cumsum(q) * rest)``), so the
    minimum holds without re-drawing.  All examples are used.  Small ``alpha`` gives a
    few large nodes and many small ones.

    Returns
    -------
    list of np.ndarray
        One sorted int64 index array per node.
    """
    check(alpha > 0, f"partition.alpha={alpha} must be > 0")
    check(
        min_samples_per_node >= 0,
        f"partition.min_samples_per_node={min_samples_per_node} must be >= 0",
    )
    total = len(labels)
    check(
        min_samples_per_node * num_nodes <= total,
        f"partition.min_samples_per_node={min_samples_per_node} x num_nodes={num_nodes} "
        f"exceeds the {total} training examples",
    )
    generator = rng.generator(seed, rng.PARTITION)
    proportions = generator.dirichlet(np.full(num_nodes, float(alpha)))
    rest = total - min_samples_per_node * num_nodes
    cuts = np.floor(np.cumsum(proportions)[:-1] * rest).astype(np.int64)
    sizes = np.diff(np.concatenate([[0], np.minimum(cuts, rest), [rest]])) + min_samples_per_node
    order = generator.permutation(total)
    return [np.sort(part).astype(np.int64) for part in np.split(order, np.cumsum(sizes)[:-1])]
