"""Label-skewed partitions from Dirichlet draws, in both conventions found in the literature.

The two are easy to confuse and give different skews at the same ``alpha``:

- :func:`dirichlet_per_node` draws, for each node, its class proportions (Dir over classes).
- :func:`dirichlet_per_class` draws, for each class, its split over the nodes (Dir over nodes).
- :func:`dirichlet` is Flower Datasets' ``DirichletPartitioner``: the second convention with
  Flower's rounding, minimum size and optional self-balancing.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from fedsim import rng
from fedsim.errors import ConfigError, check


def dirichlet_per_node(
    labels: np.ndarray, num_nodes: int, seed: int, alpha: float = 0.5
) -> list[np.ndarray]:
    """Each node draws class proportions ``q_i ~ Dir(alpha * p)`` and equally many examples.

    The scheme of Hsu, Qi and Brown (2019), "Measuring the Effects of Non-Identical Data
    Distribution for Federated Visual Classification": ``p`` is the global class prior.
    Nodes, in order, draw their share (``len(labels) / num_nodes``, as even as possible)
    class by class without replacement; once a class runs out, the node's proportions are
    renormalised over the classes left.  All examples are used.  Small ``alpha`` gives each
    node few classes, large ``alpha`` approaches IID.

    Returns
    -------
    list of np.ndarray
        One sorted int64 index array per node.
    """
    check(alpha > 0, f"partition.alpha={alpha} must be > 0")
    total = len(labels)
    check(
        total >= num_nodes,
        f"partition=dirichlet_per_node: {total} training examples cannot give each of "
        f"num_nodes={num_nodes} nodes one",
    )
    generator = rng.generator(seed, rng.PARTITION)
    classes, class_of_example = np.unique(labels, return_inverse=True)
    pools = [
        generator.permutation(np.flatnonzero(class_of_example == c)) for c in range(len(classes))
    ]
    class_sizes = np.array([len(pool) for pool in pools], dtype=np.int64)
    prior = class_sizes / total
    used = np.zeros_like(class_sizes)
    shards = []
    for size in (len(part) for part in np.array_split(np.arange(total), num_nodes)):
        proportions = generator.dirichlet(alpha * prior)
        counts = _class_counts(generator, proportions, size, class_sizes - used)
        taken = [pool[u : u + k] for pool, u, k in zip(pools, used, counts, strict=True)]
        used += counts
        shards.append(np.sort(np.concatenate(taken)).astype(np.int64))
    return shards


def _class_counts(
    generator: np.random.Generator, proportions: np.ndarray, size: int, available: np.ndarray
) -> np.ndarray:
    """How many examples of each class ``size`` draws from ``proportions`` take, capped by stock.

    Draws that land on an exhausted class are drawn again over the classes left, which is
    drawing one example at a time with renormalisation, done in batches.
    """
    counts = np.zeros_like(available)
    while size > 0:
        left = available - counts
        weights = proportions * (left > 0)
        if not weights.sum() > 0:  # the proportions underflowed to zero on every class left
            weights = (left > 0).astype(float)
        drawn = np.minimum(generator.multinomial(size, weights / weights.sum()), left)
        counts += drawn
        size -= int(drawn.sum())
    return counts


def dirichlet_per_class(
    labels: np.ndarray,
    num_nodes: int,
    seed: int,
    alpha: float = 0.5,
    min_samples_per_node: int = 1,
    max_attempts: int = 100,
) -> list[np.ndarray]:
    """Each class is split over the nodes in proportions ``p_c ~ Dir(alpha * 1_n)``.

    The convention of the MoDeST code (de Vos et al. 2023, ``DirichletDataPartitioner``,
    after FedKD) and of NIID-Bench (Li et al. 2022, "Federated Learning on Non-IID Data
    Silos"): class ``c``'s examples, in data set order, go contiguously to the nodes, node
    ``i`` taking ``floor(p_c[i] * N_c)`` and the last node the remainder.  Draws are
    repeated until every node holds at least ``min_samples_per_node`` examples.  Small
    ``alpha`` concentrates each class on few nodes.

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
    check(
        min_samples_per_node * num_nodes <= len(labels),
        f"partition.min_samples_per_node={min_samples_per_node} x num_nodes={num_nodes} "
        f"exceeds the {len(labels)} training examples",
    )
    generator = rng.generator(seed, rng.PARTITION)
    shards = _draw_per_class(
        generator, labels, num_nodes, alpha, min_samples_per_node, max_attempts,
        lambda indices, proportions, _sizes: split_floor_remainder(indices, proportions),
    )  # fmt: skip
    if shards is None:
        raise ConfigError(
            f"partition=dirichlet_per_class with alpha={alpha} left a node with fewer than "
            f"min_samples_per_node={min_samples_per_node} examples in {max_attempts} draws; "
            "raise partition.alpha, lower partition.min_samples_per_node or use fewer nodes"
        )
    return shards


def dirichlet(
    labels: np.ndarray,
    num_nodes: int,
    seed: int,
    alpha: float = 0.5,
    min_partition_size: int = 10,
    self_balancing: bool = False,
    max_attempts: int = 11,
) -> list[np.ndarray]:
    """Flower Datasets' ``DirichletPartitioner``: each class split over the nodes by Dir(alpha).

    ``DirichletPartitioner(partition_by="label", alpha, min_partition_size, self_balancing)``,
    after Yurochkin et al. (2019), "Bayesian Nonparametric Federated Learning of Neural
    Networks", as Flower implements it: class ``c``'s examples, in data set order, are cut at
    ``int(cumsum(p_c) * N_c)``.  With ``self_balancing`` a node already holding more than
    ``len(labels) / num_nodes`` examples gets none of the next classes (the proportions are
    renormalised over the others).  All of it is drawn again until every node holds at least
    ``min_partition_size`` examples, at most ``max_attempts`` times (Flower's 11: a first draw
    and 10 more).  Classes go in sorted order (Flower: order of first appearance) and the
    draws come from fedsim's generator, so the split is Flower's in law, not bit for bit.

    Returns
    -------
    list of np.ndarray
        One sorted int64 index array per node.
    """
    check(alpha > 0, f"partition.alpha={alpha} must be > 0")
    check(
        min_partition_size >= 0,
        f"partition.min_partition_size={min_partition_size} must be >= 0",
    )
    check(
        min_partition_size * num_nodes <= len(labels),
        f"partition.min_partition_size={min_partition_size} x num_nodes={num_nodes} exceeds "
        f"the {len(labels)} training examples",
    )
    check(max_attempts >= 1, f"partition.max_attempts={max_attempts} must be >= 1")
    average = len(labels) / num_nodes

    def split(indices: np.ndarray, proportions: np.ndarray, sizes: np.ndarray) -> list:
        if self_balancing:
            proportions = np.where(sizes > average, 0.0, proportions)
            proportions = proportions / proportions.sum()
        cuts = (np.cumsum(proportions) * len(indices)).astype(np.int64)[:-1]
        return np.split(indices, cuts)

    generator = rng.generator(seed, rng.PARTITION)
    shards = _draw_per_class(
        generator, labels, num_nodes, alpha, min_partition_size, max_attempts, split
    )
    if shards is None:
        raise ConfigError(
            f"partition=dirichlet with alpha={alpha} left a node with fewer than "
            f"min_partition_size={min_partition_size} examples in {max_attempts} draws; "
            "raise partition.alpha, lower partition.min_partition_size or use fewer nodes"
        )
    return shards


def _draw_per_class(
    generator: np.random.Generator,
    labels: np.ndarray,
    num_nodes: int,
    alpha: float,
    minimum: int,
    max_attempts: int,
    split: Callable[[np.ndarray, np.ndarray, np.ndarray], list[np.ndarray]],
) -> list[np.ndarray] | None:
    """Split each class over the nodes by ``split(indices, p_c ~ Dir(alpha * 1_n), sizes so
    far)``, drawn anew until every node holds ``minimum`` examples; None after
    ``max_attempts`` draws."""
    members = [np.flatnonzero(labels == label) for label in np.unique(labels)]
    for _ in range(max_attempts):
        parts: list[list[np.ndarray]] = [[] for _ in range(num_nodes)]
        sizes = np.zeros(num_nodes, dtype=np.int64)
        for indices in members:
            proportions = generator.dirichlet(np.full(num_nodes, float(alpha)))
            for node, chunk in enumerate(split(indices, proportions, sizes)):
                parts[node].append(chunk)
                sizes[node] += len(chunk)
        if sizes.min() >= minimum:
            return [np.sort(np.concatenate(chunks)).astype(np.int64) for chunks in parts]
    return None


def split_floor_remainder(indices: np.ndarray, proportions: np.ndarray) -> list[np.ndarray]:
    """Cut ``indices`` into contiguous runs of ``floor(p[i] * len)``, the last run the rest.

    MoDeST's rule: the floors sum to at most ``len(indices)``, so the last node absorbs what
    rounding left over (up to ``len(proportions) - 1`` extra examples).
    """
    counts = np.floor(proportions[:-1] * len(indices)).astype(np.int64)
    return np.split(indices, np.cumsum(counts))
