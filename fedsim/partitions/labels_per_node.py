"""Quantity-based label imbalance: every node holds exactly k distinct labels (NIID-Bench #C=k)."""

from __future__ import annotations

import numpy as np

from fedsim import rng
from fedsim.errors import check


def labels_per_node(
    labels: np.ndarray, num_nodes: int, seed: int, labels_per_node: int = 2
) -> list[np.ndarray]:
    """Give every node ``labels_per_node`` distinct labels, then split each label over its holders.

    The "#C=k" partition of NIID-Bench, Li, Diao, Chen and He (2022), "Federated Learning
    on Non-IID Data Silos: An Experimental Study" (``partition_data``, ``noniid-#label<k>``):
    node ``i`` first takes label ``i mod C`` (``C`` the number of distinct labels), then
    ``k - 1`` further distinct labels uniformly at random among the others.  Each label's
    examples are then shuffled and split as evenly as possible (sizes differ by at most
    one) among the nodes holding it, in node order.  With ``num_nodes >= C`` every label is
    held; otherwise the examples of labels nobody holds are left unused.

    Returns
    -------
    list of np.ndarray
        One sorted int64 index array per node.
    """
    classes, class_of_example = np.unique(labels, return_inverse=True)
    num_classes = len(classes)
    check(
        1 <= labels_per_node <= num_classes,
        f"partition.labels_per_node={labels_per_node} must be between 1 and the "
        f"{num_classes} classes of the training data",
    )
    check(
        len(labels) >= num_nodes,
        f"partition=labels_per_node: {len(labels)} training examples cannot give each of "
        f"num_nodes={num_nodes} nodes one",
    )
    generator = rng.generator(seed, rng.PARTITION)
    held = _draw_labels(generator, num_nodes, num_classes, labels_per_node)
    parts: list[list[np.ndarray]] = [[] for _ in range(num_nodes)]
    for label in range(num_classes):
        holders = np.flatnonzero((held == label).any(axis=1))
        members = np.flatnonzero(class_of_example == label)
        check(
            len(members) >= len(holders),
            f"partition.labels_per_node={labels_per_node}: class {classes[label]} has "
            f"{len(members)} examples for the {len(holders)} nodes holding it; lower "
            "num_nodes or partition.labels_per_node",
        )
        if len(holders) == 0:
            continue
        pieces = np.array_split(generator.permutation(members), len(holders))
        for node, piece in zip(holders, pieces, strict=True):
            parts[node].append(piece)
    return [np.sort(np.concatenate(chunks)).astype(np.int64) for chunks in parts]


def _draw_labels(
    generator: np.random.Generator, num_nodes: int, num_classes: int, labels_per_node: int
) -> np.ndarray:
    """The ``(num_nodes, labels_per_node)`` label indices each node holds: ``i mod C`` first.

    NIID-Bench draws the further labels one at a time and rejects repeats, which picks a
    uniformly random subset of the other labels; drawing without replacement does the same.
    """
    held = np.empty((num_nodes, labels_per_node), dtype=np.int64)
    for node in range(num_nodes):
        first = node % num_classes
        others = np.delete(np.arange(num_classes), first)
        held[node, 0] = first
        held[node, 1:] = generator.choice(others, labels_per_node - 1, replace=False)
    return held
