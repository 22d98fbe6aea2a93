"""Mixing matrices: the weights W with which gossip combines neighbours' models (X <- W X)."""

from __future__ import annotations

import networkx as nx
import numpy as np
import scipy.sparse as sp


def metropolis_hastings(graph: nx.Graph) -> sp.csr_array:
    """Metropolis-Hastings weights, symmetric and doubly stochastic.

    ``W[i, j] = 1 / (1 + max(deg i, deg j))`` for each edge, and ``W[i, i]`` takes the rest
    of row i (Xiao and Boyd, "Fast linear iterations for distributed averaging", 2004).
    """
    num_nodes = graph.number_of_nodes()
    edges = np.array([(u, v) for u, v in graph.edges() if u != v], dtype=np.int64).reshape(-1, 2)
    degree = np.bincount(edges.ravel(), minlength=num_nodes)
    weights = 1.0 / (1.0 + np.maximum(degree[edges[:, 0]], degree[edges[:, 1]]))
    rows = np.concatenate([edges[:, 0], edges[:, 1]])
    cols = np.concatenate([edges[:, 1], edges[:, 0]])
    values = np.concatenate([weights, weights])
    off_diagonal = sp.csr_array((values, (rows, cols)), shape=(num_nodes, num_nodes))
    diagonal = 1.0 - np.asarray(off_diagonal.sum(axis=1)).ravel()
    return (off_diagonal + sp.diags_array(diagonal)).tocsr()
