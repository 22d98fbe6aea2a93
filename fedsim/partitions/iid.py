"""IID partition: shuffle the examples and deal them out in equal shares."""

from __future__ import annotations

import numpy as np

from fedsim import rng
from fedsim.errors import check


def iid(
    labels: np.ndarray, num_nodes: int, seed: int, samples_per_node: int | None = None
) -> list[np.ndarray]:
    """Shuffle the examples and deal them out in equal shares.

    With ``samples_per_node`` every node gets exactly that many distinct examples (the rest
    are unused); otherwise all examples are split as evenly as possible.

    Returns
    -------
    list of np.ndarray
        One sorted int64 index array per node.
    """
    total = len(labels)
    if samples_per_node is None:
        check(
            total >= num_nodes,
            f"partition=iid: {total} training examples cannot give each of "
            f"num_nodes={num_nodes} nodes one",
        )
        used = total
    else:
        check(samples_per_node >= 1, f"partition.samples_per_node={samples_per_node} must be >= 1")
        check(
            samples_per_node * num_nodes <= total,
            f"partition.samples_per_node={samples_per_node} x num_nodes={num_nodes} exceeds the "
            f"{total} training examples (raise data.tile or lower either)",
        )
        used = samples_per_node * num_nodes
    order = rng.generator(seed, rng.PARTITION).permutation(total)[:used]
    return [np.sort(part) for part in np.array_split(order, num_nodes)]
