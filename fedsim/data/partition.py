"""Partitions: which training examples each node holds.

Every partitioner takes the train labels, the number of nodes and the seed, and returns
one sorted index array per node.
"""

from __future__ import annotations

import numpy as np

from fedsim import rng
from fedsim.errors import ConfigError, check


def iid(
    labels: np.ndarray, num_nodes: int, seed: int, samples_per_node: int | None = None
) -> list[np.ndarray]:
    """Shuffle the examples and deal them out in equal shares.

    With ``samples_per_node`` every node gets exactly that many distinct examples (the rest
    are unused); otherwise all examples are split as evenly as possible.
    """
    total = len(labels)
    if samples_per_node is None:
        check(
            total >= num_nodes,
            f"partition=iid: {total} training examples cannot give each of "
            f"num_nodes={num_nodes} nodes one",
        )
        samples_per_node_total = total
    else:
        check(samples_per_node >= 1, f"partition.samples_per_node={samples_per_node} must be >= 1")
        check(
            samples_per_node * num_nodes <= total,
            f"partition.samples_per_node={samples_per_node} x num_nodes={num_nodes} exceeds the "
            f"{total} training examples (raise data.tile or lower either)",
        )
        samples_per_node_total = samples_per_node * num_nodes
    order = rng.generator(seed, rng.PARTITION).permutation(total)[:samples_per_node_total]
    return [np.sort(part) for part in np.array_split(order, num_nodes)]


def dirichlet(
    labels: np.ndarray,
    num_nodes: int,
    seed: int,
    alpha: float = 0.5,
    min_samples_per_node: int = 1,
    max_attempts: int = 100,
) -> list[np.ndarray]:
    """Label-skewed partition: each class is split over nodes in proportions drawn from Dir(alpha).

    The scheme of Hsu, Qi and Brown (2019), "Measuring the Effects of Non-Identical Data
    Distribution for Federated Visual Classification": small ``alpha`` gives each node few
    classes, large ``alpha`` approaches IID.  Draws are repeated until every node holds at
    least ``min_samples_per_node`` examples.
    """
    check(alpha > 0, f"partition.alpha={alpha} must be > 0")
    check(
        min_samples_per_node >= 0,
        f"partition.min_samples_per_node={min_samples_per_node} must be >= 0",
    )
    check(
        min_samples_per_node * num_nodes <= len(labels),
        f"partition.min_samples_per_node={min_samples_per_node} x num_nodes={num_nodes} "
        "exceeds the "
        f"{len(labels)} training examples",
    )
    generator = rng.generator(seed, rng.PARTITION)
    classes = np.unique(labels)
    for _ in range(max_attempts):
        parts: list[list[np.ndarray]] = [[] for _ in range(num_nodes)]
        for label in classes:
            members = generator.permutation(np.flatnonzero(labels == label))
            proportions = generator.dirichlet(np.full(num_nodes, alpha))
            cuts = (np.cumsum(proportions)[:-1] * len(members)).astype(int)
            for node, chunk in enumerate(np.split(members, cuts)):
                parts[node].append(chunk)
        shards = [np.sort(np.concatenate(chunks)) for chunks in parts]
        if min(len(shard) for shard in shards) >= min_samples_per_node:
            return shards
    raise ConfigError(
        f"partition=dirichlet with alpha={alpha} left a node with fewer than "
        f"min_samples_per_node={min_samples_per_node} examples in {max_attempts} draws; "
        "raise partition.alpha, lower partition.min_samples_per_node or use fewer nodes"
    )
