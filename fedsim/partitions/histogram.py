"""Label histograms of a partition: how many examples of each class every node holds."""

from __future__ import annotations

import numpy as np


def label_histograms(labels: np.ndarray, shards: list[np.ndarray], num_classes: int) -> np.ndarray:
    """Count each node's examples per class.

    Parameters
    ----------
    labels
        The label of every train example (integers in ``[0, num_classes)``).
    shards
        One index array per node, as a partitioner returns.
    num_classes
        Number of classes (columns of the result).

    Returns
    -------
    np.ndarray
        Integer counts of shape ``(len(shards), num_classes)``.
    """
    num_nodes = len(shards)
    sizes = np.array([len(shard) for shard in shards], dtype=np.int64)
    indices = np.concatenate([np.asarray(s, dtype=np.int64) for s in shards] or [[]]).astype(
        np.int64
    )
    nodes = np.repeat(np.arange(num_nodes, dtype=np.int64), sizes)
    cells = nodes * num_classes + np.asarray(labels, dtype=np.int64)[indices]
    counts = np.bincount(cells, minlength=num_nodes * num_classes)
    return counts.reshape(num_nodes, num_classes)
