"""Mixing rules: from a graph to the weights W with which gossip combines models (X <- W X).

``W[i, j]`` is the weight node i gives to the model it receives from j: non-zero only on
the diagonal and where j sends to i (an undirected edge, or ``j -> i`` in a ``DiGraph``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fedsim.errors import ConfigError, check
from fedsim.files import first_non_finite, number_rows, read_matrix_market, reading
from fedsim.lazy import lazy_module

nx = lazy_module("networkx")
sp = lazy_module("scipy.sparse")

_NPY_HEADERS = {
    (1, 0): np.lib.format.read_array_header_1_0,
    (2, 0): np.lib.format.read_array_header_2_0,
}


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
    """A matrix the user supplies: ``.npy``, ``.mtx`` (Matrix Market) or text (``.csv``,
    ``.txt``: one row per line, numbers separated by commas or spaces, ``#`` comments).

    It must be n x n, real, finite, non-negative and row-stochastic, and non-zero off the
    diagonal only where the graph links the two nodes.  A ``.npy`` file of Python objects
    is refused: it would have to be unpickled, which can run code.
    """
    check(path is not None, "mixing=matrix needs mixing.path=PATH (.npy, .mtx, .csv or .txt)")
    source = Path(path)
    check(source.is_file(), f"mixing.path={path} does not exist")
    where, n = f"mixing.path={path}", graph.number_of_nodes()
    if source.suffix == ".npy":
        loaded = _read_npy(where, source, n)
    elif source.suffix == ".mtx":
        loaded = read_matrix_market(where, source)
    else:
        loaded = _read_text(where, source, n)
    _check_shape(where, loaded.shape, n)
    coo = sp.coo_array(loaded, dtype=np.float64)
    bad = first_non_finite(coo.data)
    if bad is not None:
        raise ConfigError(
            f"{where}: expected finite weights, found W[{coo.row[bad]}, {coo.col[bad]}]="
            f"{coo.data[bad]}"
        )
    allowed = set(zip(*_received(graph), strict=True))
    for i, j, value in zip(coo.row, coo.col, coo.data, strict=True):
        if i != j and value != 0 and (i, j) not in allowed:
            raise ConfigError(
                f"{where} has W[{i}, {j}]={value:g} but node {j} does not send to {i}"
            )
    weights = coo.tocsr()
    check_mixing(weights, where)
    return weights


def _read_npy(where: str, source: Path, n: int) -> np.ndarray:
    """A ``.npy`` array, its header checked before any data is read (no pickles)."""
    expected = f"a .npy file of a {n} x {n} array of numbers"
    with reading(where, expected), source.open("rb") as handle:
        version = np.lib.format.read_magic(handle)
        read_header = _NPY_HEADERS.get(version)
        if read_header is None:
            raise ConfigError(f"{where}: expected {expected}, found .npy version {version}")
        shape, _, dtype = read_header(handle)
        _check_numbers(where, dtype)
        _check_shape(where, shape, n)
        needed, left = int(np.prod(shape)) * dtype.itemsize, source.stat().st_size - handle.tell()
        check(
            left >= needed,
            f"{where}: expected {needed} bytes of array data, found {left} (a truncated file?)",
        )
        return np.load(source, allow_pickle=False)


def _read_text(where: str, source: Path, n: int) -> np.ndarray:
    """A matrix written as text, one row per line."""
    rows = number_rows(where, source)
    for line_number, _, numbers in rows:
        check(
            len(numbers) == n,
            f"{where} line {line_number}: expected {n} numbers (a row of W), found {len(numbers)}",
        )
    return np.array([numbers for _, _, numbers in rows])


def _check_numbers(where: str, dtype: np.dtype) -> None:
    """Refuse arrays of anything but real numbers (e.g. complex, strings, Python objects)."""
    if dtype.kind == "O":
        raise ConfigError(
            f"{where}: expected an array of numbers, found an array of Python objects "
            "(which would have to be unpickled; fedsim never does)"
        )
    check(dtype.kind in "biuf", f"{where}: expected real numbers, found dtype {dtype}")


def _check_shape(where: str, shape: tuple[int, ...], n: int) -> None:
    check(
        tuple(shape) == (n, n),
        f"{where}: expected a {n} x {n} matrix (one row per node), found shape {tuple(shape)}",
    )


def check_mixing(
    weights: sp.csr_array, source: str, doubly_stochastic: bool = False, symmetric: bool = False
) -> None:
    """Raise :class:`ConfigError` unless ``weights`` is a valid mixing matrix for the use."""
    tolerance = 1e-6
    check(
        first_non_finite(weights.data) is None,
        f"{source} gives a mixing matrix with non-finite weights (NaN or infinite)",
    )
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
