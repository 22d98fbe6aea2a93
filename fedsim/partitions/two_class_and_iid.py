"""FedDisco's NIID-2 split: some nodes hold two classes each, the others a share of every class."""

from __future__ import annotations

import numpy as np

from fedsim import rng
from fedsim.errors import check


def two_class_and_iid(
    labels: np.ndarray, num_nodes: int, seed: int, two_class_nodes: int = 5
) -> list[np.ndarray]:
    """Give the first ``two_class_nodes`` nodes two classes each and the others every class.

    The "NIID-2" partition of Ye et al. (FedDisco, ICML 2023; the official code's
    ``partition_data``, ``noniid-2``): node ``i < m`` holds classes ``2i mod C`` and
    ``2i + 1 mod C`` (``C`` the number of distinct labels), nodes ``m .. n - 1`` are IID.
    Each class's examples, shuffled, are cut into ``n`` shards of equal size (sizes differ by
    at most one); each two-class node holding the class takes ``C / 2`` of them, in node
    order, and each IID node one, so every node holds about ``1 / n`` of the data.  With
    ``n = 6``, ``m = 5`` and ten classes (the paper's FMNIST setting), each two-class node
    holds 5/6 of its two classes and the IID node 1/6 of every class.  ``C`` must be even
    and ``m`` a multiple of ``C / 2`` (each class then has ``m / (C / 2)`` two-class
    holders), and every class needs ``n`` examples.

    Returns
    -------
    list of np.ndarray
        One sorted int64 index array per node.
    """
    classes, class_of_example = np.unique(labels, return_inverse=True)
    num_classes = len(classes)
    pairs = num_classes // 2
    check(
        num_classes % 2 == 0,
        f"partition=two_class_and_iid pairs the classes, but the training data has "
        f"{num_classes}: use a data set with an even number of classes",
    )
    check(
        0 <= two_class_nodes <= num_nodes and two_class_nodes % pairs == 0,
        f"partition.two_class_nodes={two_class_nodes} must be a multiple of {pairs} (half the "
        f"{num_classes} classes) between 0 and num_nodes={num_nodes}",
    )
    generator = rng.generator(seed, rng.PARTITION)
    parts: list[list[np.ndarray]] = [[] for _ in range(num_nodes)]
    iid_nodes = range(two_class_nodes, num_nodes)
    for label in range(num_classes):
        members = np.flatnonzero(class_of_example == label)
        check(
            len(members) >= num_nodes,
            f"partition=two_class_and_iid: class {classes[label]} has {len(members)} examples, "
            f"fewer than num_nodes={num_nodes}; lower num_nodes",
        )
        shards = np.array_split(generator.permutation(members), num_nodes)
        holders = [node for node in range(two_class_nodes) if node % pairs == label // 2]
        owners = [node for node in holders for _ in range(pairs)] + list(iid_nodes)
        for node, shard in zip(owners, shards, strict=True):
            parts[node].append(shard)
    return [np.sort(np.concatenate(chunks)).astype(np.int64) for chunks in parts]
