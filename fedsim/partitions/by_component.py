"""Partition by topology component: disjoint label sets per component, IID within one."""

from __future__ import annotations

import numpy as np

from fedsim import rng
from fedsim.errors import check


def by_component(
    labels: np.ndarray,
    num_nodes: int,
    seed: int,
    *,
    components: list[list[int]],
    classes_per_component: int | None = None,
) -> list[np.ndarray]:
    """Give each connected component of the topology its own classes, shared IID inside it.

    For semi-decentralized studies, where groups of nodes that cannot talk to each other
    see different tasks.  The sorted classes are cut into ``len(components)`` contiguous
    groups (sizes differ by at most one), or into groups of ``classes_per_component``
    (classes beyond ``len(components) * classes_per_component`` are unused).  A
    component's examples are shuffled and dealt out evenly to its nodes.  ``components``
    (the sorted node ids of each component) is passed by the engine.

    Returns
    -------
    list of np.ndarray
        One sorted int64 index array per node.
    """
    members = sorted(node for component in components for node in component)
    check(
        members == list(range(num_nodes)),
        f"partition=by_component: the components must hold each of the num_nodes={num_nodes} "
        "nodes exactly once",
    )
    classes = np.unique(labels)
    num_components = len(components)
    check(
        len(classes) >= num_components,
        f"partition=by_component: {len(classes)} classes cannot give each of the "
        f"{num_components} topology components its own; use at most {len(classes)} components",
    )
    if classes_per_component is None:
        groups = np.array_split(classes, num_components)
    else:
        check(
            classes_per_component >= 1,
            f"partition.classes_per_component={classes_per_component} must be >= 1 or null",
        )
        check(
            classes_per_component * num_components <= len(classes),
            f"partition.classes_per_component={classes_per_component} x {num_components} "
            f"components exceeds the {len(classes)} classes",
        )
        groups = [
            classes[i * classes_per_component : (i + 1) * classes_per_component]
            for i in range(num_components)
        ]
    shards: list[np.ndarray] = [np.empty(0, dtype=np.int64)] * num_nodes
    for index, (component, group) in enumerate(zip(components, groups, strict=True)):
        examples = np.flatnonzero(np.isin(labels, group))
        check(
            len(examples) >= len(component),
            f"partition=by_component: component {index} has {len(component)} nodes but only "
            f"{len(examples)} examples of its classes {group.tolist()}",
        )
        order = rng.generator(seed, rng.PARTITION, index).permutation(examples)
        for node, part in zip(component, np.array_split(order, len(component)), strict=True):
            shards[node] = np.sort(part).astype(np.int64)
    return shards
