"""Pathological non-IID partition: label-sorted shards, a few per node."""

from __future__ import annotations

import numpy as np

from fedsim import rng
from fedsim.errors import check


def shards(
    labels: np.ndarray, num_nodes: int, seed: int, shards_per_node: int = 2
) -> list[np.ndarray]:
    """Sort the examples by label, cut them into shards and give each node a few at random.

    McMahan et al. (2017), "Communication-Efficient Learning of Deep Networks from
    Decentralized Data": the examples, sorted by label (ties in data set order), are cut
    into ``num_nodes * shards_per_node`` contiguous shards of equal size (sizes differ by
    at most one, so all examples are used) and every node gets ``shards_per_node`` of them,
    drawn without replacement.  A node thus holds at most ``shards_per_node`` classes when
    the shard size divides every class's size; otherwise a shard that straddles two
    classes adds one.

    Returns
    -------
    list of np.ndarray
        One sorted int64 index array per node.
    """
    check(shards_per_node >= 1, f"partition.shards_per_node={shards_per_node} must be >= 1")
    total = len(labels)
    num_shards = num_nodes * shards_per_node
    check(
        num_shards <= total,
        f"partition.shards_per_node={shards_per_node} x num_nodes={num_nodes} exceeds the "
        f"{total} training examples (each shard needs one)",
    )
    by_label = np.argsort(labels, kind="stable")
    pieces = np.array_split(by_label, num_shards)
    order = rng.generator(seed, rng.PARTITION).permutation(num_shards)
    owned = order.reshape(num_nodes, shards_per_node)
    return [np.sort(np.concatenate([pieces[s] for s in row])).astype(np.int64) for row in owned]
