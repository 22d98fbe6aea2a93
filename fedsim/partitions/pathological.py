"""Flower Datasets' ``PathologicalPartitioner``: every node holds exactly k classes."""

from __future__ import annotations

import numpy as np

from fedsim import rng
from fedsim.errors import check

MODES = ("random", "first-deterministic", "deterministic")


def pathological(
    labels: np.ndarray,
    num_nodes: int,
    seed: int,
    num_classes_per_partition: int = 2,
    class_assignment_mode: str = "random",
) -> list[np.ndarray]:
    """Give every node ``num_classes_per_partition`` classes; split each class evenly over them.

    Flower Datasets' ``PathologicalPartitioner(partition_by="label", num_classes_per_partition,
    class_assignment_mode)``, after NIID-Bench's #C=k (Li et al. 2022, "Federated Learning on
    Non-IID Data Silos"). ``class_assignment_mode`` (Flower's default ``random``):

    - ``random``: k classes drawn without replacement for each node;
    - ``first-deterministic``: class ``i mod C`` for node ``i``, then k - 1 others at random
      (NIID-Bench's rule; :func:`~fedsim.partitions.labels_per_node` draws the same classes);
    - ``deterministic``: classes ``i, i + 1, ..., i + k - 1`` (mod C) for node ``i``.

    Each class's examples, in data set order, are then cut into as many contiguous, equal (to
    one example) pieces as nodes hold it, the first piece to the lowest node.  Classes nobody
    holds are left out.

    Returns
    -------
    list of np.ndarray
        One sorted int64 index array per node.
    """
    classes, class_of_example = np.unique(labels, return_inverse=True)
    num_classes = len(classes)
    check(
        class_assignment_mode in MODES,
        f"partition.class_assignment_mode={class_assignment_mode} is not one of: "
        f"{', '.join(MODES)}",
    )
    check(
        1 <= num_classes_per_partition <= num_classes,
        f"partition.num_classes_per_partition={num_classes_per_partition} must be between 1 "
        f"and the {num_classes} classes of the training data",
    )
    generator = rng.generator(seed, rng.PARTITION)
    held = assign_classes(
        generator, num_nodes, num_classes, num_classes_per_partition, class_assignment_mode
    )
    parts: list[list[np.ndarray]] = [[] for _ in range(num_nodes)]
    for label in range(num_classes):
        holders = np.flatnonzero((held == label).any(axis=1))
        members = np.flatnonzero(class_of_example == label)
        check(
            len(members) >= len(holders),
            f"partition.num_classes_per_partition={num_classes_per_partition}: class "
            f"{classes[label]} has {len(members)} examples for the {len(holders)} nodes "
            "holding it; lower num_nodes or partition.num_classes_per_partition",
        )
        if len(holders) == 0:
            continue
        for node, piece in zip(holders, np.array_split(members, len(holders)), strict=True):
            parts[node].append(piece)
    return [np.sort(np.concatenate(chunks)).astype(np.int64) for chunks in parts]


def assign_classes(
    generator: np.random.Generator, num_nodes: int, num_classes: int, per_node: int, mode: str
) -> np.ndarray:
    """The ``(num_nodes, per_node)`` class indices each node holds, by ``mode`` (see
    :func:`pathological`)."""
    nodes = np.arange(num_nodes)
    if mode == "deterministic":
        return (nodes[:, None] + np.arange(per_node)) % num_classes
    held = np.empty((num_nodes, per_node), dtype=np.int64)
    for node in nodes:
        if mode == "random":
            held[node] = generator.choice(num_classes, per_node, replace=False)
        else:  # first-deterministic: Flower redraws repeats, which is drawing without them
            first = node % num_classes
            held[node, 0] = first
            others = np.delete(np.arange(num_classes), first)
            held[node, 1:] = generator.choice(others, per_node - 1, replace=False)
    return held
