"""Natural partition: each node holds the examples of a few owners (writers, users)."""

from __future__ import annotations

import numpy as np

from fedsim import rng
from fedsim.errors import ConfigError, check
from fedsim.training.schedule import NodeData


def natural(
    labels: np.ndarray, num_nodes: int, seed: int, *, owners: np.ndarray | None = None
) -> NodeData:
    """Split the data set by owner: the sorted owners, shuffled, are dealt out evenly.

    The LEAF split as MoDeST uses it (de Vos et al. 2023; Caldas et al. 2018, "LEAF: A
    Benchmark for Federated Settings"): every node gets all examples of about
    ``num_owners / num_nodes`` owners (counts differ by at most one), so the skew is the
    data's own.  ``owners`` (the owner id of each train example) is passed by the engine.

    Returns
    -------
    NodeData
        An offset index (no array per node): as a sequence, one sorted int64 index array
        per node.
    """
    if owners is None:
        raise ConfigError(
            "partition=natural needs a data set with a natural split (femnist, synthetic)"
        )
    check(
        len(owners) == len(labels),
        f"partition=natural: {len(owners)} owner ids for {len(labels)} training examples",
    )
    unique, owner_of_example = np.unique(owners, return_inverse=True)
    check(
        len(unique) >= num_nodes,
        f"partition=natural: the data set has {len(unique)} owners, fewer than "
        f"num_nodes={num_nodes}; use at most {len(unique)} nodes",
    )
    shuffled = rng.generator(seed, rng.PARTITION).permutation(len(unique))
    node_of_owner = np.empty(len(unique), dtype=np.int64)
    for node, group in enumerate(np.array_split(shuffled, num_nodes)):
        node_of_owner[group] = node
    node_of_example = node_of_owner[owner_of_example.reshape(-1)]
    by_node = np.argsort(node_of_example, kind="stable")  # stable: indices stay sorted per node
    counts = np.bincount(node_of_example, minlength=num_nodes)
    return NodeData.from_offsets(by_node, counts)
