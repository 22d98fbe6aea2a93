"""Mixing rules: from a graph to the weights W with which gossip combines models (X <- W X).

``W[i, j]`` is the weight node i gives to the model it receives from j: non-zero only on
the diagonal and where j sends to i (an undirected edge, or ``j -> i`` in a ``DiGraph``).
"""

from __future__ import annotations

from pathlib import Path

import networkx as nx
import numpy as np
import scipy.io
import scipy.sparse as sp

from fedsim.errors import ConfigError, check


def _received(graph: nx.Graph) -> tuple[np.ndarray, np.ndarray]:
    """(receiver, sender) arrays, one entry per message direction, without self-loops."""
    edges = np.array([(u, v) for u, v in graph.edges() if u != v], dtype=np.int64).reshape(-1, 2)
    if graph.is_directed():
        return edges[:, 1], edges[:, 0]
    return np.concatenate([edges[:, 0], edges[:, 1]]), np.concatenate([edges[:, 1], edges[:, 0]])


def _with_diagonal(
    receivers: np.ndarray, senders: np.ndarray, weights: np.ndarray, n: int
) -> sp.csr_array:
    off_diagonal = sp.csr_array((weights, (receivers, senders)), shape=(n, n))
    diagonal = 1.0 - np.asarray(off_diagonal.sum(axis=1)).ravel()
    return (off_diagonal + sp.diags_array(diagonal)).tocsr()


def metropolis_hastings(graph: nx.Graph) -> sp.csr_array:
    """Metropolis-Hastings: ``W[i, j] = 1 / (1 + max(deg i, deg j))``, the rest on the diagonal.

    Symmetric and doubly stochastic on undirected graphs (Xiao and Boyd, "Fast linear
    iterations for distributed averaging", 2004).  On a directed graph the degrees are
    in-degrees, which gives 1/2 to self and 1/2 to the one peer of a one-peer graph.
    """
    receivers, senders = _received(graph)
    degree = np.bincount(receivers, minlength=graph.number_of_nodes())
    weights = 1.0 / (1.0 + np.maximum(degree[receivers], degree[senders]))
    return _with_diagonal(receivers, senders, weights, graph.number_of_nodes())


def max_degree(graph: nx.Graph) -> sp.csr_array:
    """Uniform weights ``1 / (1 + max degree)`` on every edge, the rest on the diagonal."""
    receivers, senders = _received(graph)
    largest = np.bincount(receivers, minlength=graph.number_of_nodes()).max(initial=0)
    weights = np.full(len(receivers), 1.0 / (1.0 + largest))
    return _with_diagonal(receivers, senders, weights, graph.number_of_nodes())


def matrix(graph: nx.Graph, path: str | None = None) -> sp.csr_array:
    """A matrix the user supplies: ``.npy``, ``.mtx`` (Matrix Market) or text (``.csv``, ``.txt``).

    It must be n x n, non-negative and row-stochastic, and non-zero off the diagonal only
    where the graph links the two nodes.
    """
    check(path is not None, "mixing=matrix needs mixing.path=PATH (.npy, .mtx, .csv or .txt)")
    source = Path(path)
    check(source.is_file(), f"mixing.path={path} does not exist")
    if source.suffix == ".npy":
        loaded = np.load(source)
    elif source.suffix == ".mtx":
        loaded = scipy.io.mmread(source)
    else:
        loaded = np.loadtxt(source, delimiter="," if source.suffix == ".csv" else None)
    weights = sp.csr_array(loaded, dtype=np.float64)
    n = graph.number_of_nodes()
    check(
        weights.shape == (n, n), f"mixing.path={path} holds a {weights.shape} matrix, not {n} x {n}"
    )
    coo = weights.tocoo()
    allowed = set(zip(*_received(graph), strict=True))
    for i, j, value in zip(coo.row, coo.col, coo.data, strict=True):
        if i != j and value != 0 and (i, j) not in allowed:
            raise ConfigError(
                f"mixing.path={path} has W[{i}, {j}]={value:g} but node {j} does not send to {i}"
            )
    check_mixing(weights, "mixing=matrix")
    return weights


def check_mixing(
    weights: sp.csr_array, source: str, doubly_stochastic: bool = False, symmetric: bool = False
) -> None:
    """Raise :class:`ConfigError` unless ``weights`` is a valid mixing matrix for the use."""
    tolerance = 1e-6
    check(weights.min() >= 0, f"{source} gives a mixing matrix with negative weights")
    rows = np.asarray(weights.sum(axis=1)).ravel()
    worst = int(np.abs(rows - 1).argmax()) if len(rows) else 0
    check(
        np.allclose(rows, 1, atol=tolerance),
        f"{source} gives a mixing matrix whose row {worst} sums to {rows[worst]:.6g}; "
        "rows must sum to 1",
    )
    if doubly_stochastic:
        columns = np.asarray(weights.sum(axis=0)).ravel()
        worst = int(np.abs(columns - 1).argmax())
        check(
            np.allclose(columns, 1, atol=tolerance),
            f"{source} gives a mixing matrix whose column {worst} sums to {columns[worst]:.6g}; "
            "this strategy needs a doubly stochastic W "
            "(use mixing=metropolis_hastings or max_degree)",
        )
    if symmetric:
        check(
            abs(weights - weights.T).max() <= tolerance,
            f"{source} gives a non-symmetric mixing matrix; this strategy needs W = W^T",
        )
