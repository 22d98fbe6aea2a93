"""Noise covariances across nodes for DP decentralized SGD: local, central, DECOR, zero-sum, CorN.

Every node adds Gaussian noise to its clipped-gradient sum before sharing; per coordinate the
n nodes' noises are N(0, R).  Node i is protected at level b when ``(R^-1)_ii <= b`` (DECOR's
accountant, see :mod:`fedsim.privacy.accounting`); what the network keeps after one mixing step
is ``Tr(W R W^T)``.  CorN-DSGD (Rodio et al., arXiv 2501.14644) minimises that trace over
``R = s I + R_cor`` by a semidefinite program; DECOR (Allouah et al., ICML 2024) and global
zero-sum noise are the same program restricted to two scalars.  Every mechanism lies at or above
the central-DP level ``1 / (n b)``: :func:`normalised_noise` is 1 there.  Section numbers ("spec
§6") refer to fedsim's specification, ``papers/correlated-noise.md``.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from fedsim.errors import ConfigError, check
from fedsim.lazy import lazy_module
from fedsim.simulated.frozen import frozen

sp = lazy_module("scipy.sparse")

if TYPE_CHECKING:
    import cvxpy as cp

MECHANISMS = ("central", "local", "decor", "zero_sum", "corn")
CORN_MAX_NODES = 200  # two n x n variables and a 2n x 2n LMI (spec §13.10)
TOLERANCE = 1e-9  # on the symmetry and the row sums of W
FEASIBILITY = 1e-6  # relative slack of max_i (R^-1)_ii over b (spec §13.4)
SINGULAR = 1e-12  # smallest / largest eigenvalue below which R counts as singular
NO_EDGES = frozen(np.empty((0, 2)), np.int64)
# SCS's default 1e-4 leaves CorN 1% above its optimum on ER(20, 0.2); CLARABEL's are fine
SOLVER_OPTIONS: dict[str, dict[str, float]] = {"SCS": {"eps_abs": 1e-8, "eps_rel": 1e-8}}


@dataclass(frozen=True, eq=False)
class NoiseCovariance:
    """R = independent * I + pair_variance * L + dense @ dense.T  (per coordinate, across nodes)

    L = sum over `edges` (i, j) of (e_i - e_j)(e_i - e_j)^T: the unweighted Laplacian of the
    pairs that share a seed (DECOR); `dense` (n, r) is the factor of the part drawn from one
    seed that all nodes share (zero-sum, CorN, central).  Arrays are stored read-only copies.
    """

    num_nodes: int
    independent: float  # variance of each node's private noise (sigma_cdp)
    edges: np.ndarray  # (m, 2) int64, i < j, sorted rows; shape (0, 2) when none
    pair_variance: float  # sigma_cor (0.0 when no edges)
    dense: np.ndarray | None  # (n, r) float64, or None

    def __post_init__(self) -> None:
        object.__setattr__(self, "edges", frozen(np.reshape(self.edges, (-1, 2)), np.int64))
        if self.dense is not None:
            dense = np.reshape(self.dense, (self.num_nodes, -1))
            object.__setattr__(self, "dense", frozen(dense, np.float64))

    def matrix(self) -> np.ndarray:
        """R as a dense float64 (n, n) array."""
        result = self.independent * np.eye(self.num_nodes)
        if len(self.edges):
            result += self.pair_variance * laplacian(self.edges, self.num_nodes)
        if self.dense is not None:
            result += self.dense @ self.dense.T
        return result

    def trace_after(self, weights: Any) -> float:
        """``Tr(W R W^T)`` from R's parts, for a dense or sparse W: ``s ||W||_F^2 + c
        ||W D||_F^2 + ||W F||_F^2`` with D the edges' incidence matrix (no n x n product)."""
        weights = sp.csr_array(weights)
        total = self.independent * float((weights.data**2).sum())
        if len(self.edges):
            edges = np.arange(len(self.edges))
            incidence = sp.csr_array(
                (
                    np.repeat([[1.0, -1.0]], len(edges), axis=0).ravel(),
                    (self.edges.ravel(), np.repeat(edges, 2)),
                ),
                shape=(self.num_nodes, len(edges)),
            )
            total += self.pair_variance * float(((weights @ incidence).data ** 2).sum())
        if self.dense is not None:
            total += float(((weights @ self.dense) ** 2).sum())
        return total

    def max_inverse_diagonal(self) -> float:
        """``max_i (R^-1)_ii``: ``1 / s`` for independent noise, else from R's eigenvalues."""
        if self.dense is None and not len(self.edges):
            return 1 / self.independent if self.independent > 0 else float("inf")
        return max_inverse_diagonal(self.matrix())

    def scaled(self, factor: float) -> NoiseCovariance:
        """``R * factor``, with the same seeds (edges and dense columns)."""
        check(factor >= 0, f"a covariance can only be scaled by a factor >= 0, got {factor}")
        dense = None if self.dense is None else self.dense * np.sqrt(factor)
        return replace(
            self,
            independent=self.independent * factor,
            pair_variance=self.pair_variance * factor,
            dense=dense,
        )

    def without(self, coalition: Iterable[int]) -> NoiseCovariance:
        """The noise an outsider still faces once ``coalition`` subtracts every term it knows.

        A coalition knows the seed of each edge it touches and, if non-empty, the seed that
        all nodes share (spec §8): with a dense part only ``s I`` remains for CorN.
        """
        members = np.fromiter(coalition, dtype=np.int64)
        if members.size == 0:
            return self
        check(
            bool(((members >= 0) & (members < self.num_nodes)).all()),
            f"coalition {sorted(members.tolist())} names nodes outside 0 .. {self.num_nodes - 1}",
        )
        kept = self.edges[~np.isin(self.edges, members).any(axis=1)]
        return replace(
            self, edges=kept, pair_variance=self.pair_variance if len(kept) else 0.0, dense=None
        )


def laplacian(edges: np.ndarray, num_nodes: int) -> np.ndarray:
    """The unweighted Laplacian D - A of the undirected ``edges`` (m, 2) on ``num_nodes``."""
    result = np.zeros((num_nodes, num_nodes))
    first, second = np.asarray(edges, dtype=np.int64).reshape(-1, 2).T
    np.add.at(result, (first, second), -1.0)
    np.add.at(result, (second, first), -1.0)
    result[np.diag_indices(num_nodes)] = -result.sum(axis=1)
    return result


def max_inverse_diagonal(matrix: np.ndarray) -> float:
    """``max_i (R^-1)_ii``, or inf when R is singular (smallest eigenvalue <= 1e-12 largest)."""
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    if values[-1] <= 0 or values[0] <= SINGULAR * values[-1]:
        return float("inf")
    return float(((vectors**2) @ (1 / values)).max())


def noise_trace(weights: np.ndarray, matrix: np.ndarray) -> float:
    """``Tr(W R W^T)``: the noise variance summed over nodes after one mixing step."""
    return float(np.trace(weights @ matrix @ weights.T))


def normalised_noise(weights: np.ndarray, matrix: np.ndarray, bound: float) -> float:
    """``n b Tr(W R W^T)``: 1 at the central-DP level, ``n ||W||_F^2`` for local DP."""
    return len(weights) * bound * noise_trace(weights, matrix)


def covariance(
    mechanism: str,
    weights: np.ndarray,
    bound: float,
    max_variance_ratio: float = 1e3,
    solver: str = "CLARABEL",
) -> NoiseCovariance:
    """The covariance of `mechanism` for the symmetric doubly stochastic mixing matrix `weights`
    (dense (n, n) float64) and per-node privacy bound b=`bound` (every node needs (R^-1)_ii <= b).

    ``local`` is I / b; ``central`` is the singular CDP reference 11^T / (n^2 b) (one vector
    that every node adds; it protects only the network sum).  ``decor``, ``zero_sum`` and
    ``corn`` minimise Tr(W R W^T) over their family (spec §6) at b = 1, since
    R(b) = R(1) / b, cached per W; the result is checked to meet the bound within 1e-6.  Their
    diagonal is capped at ``max_variance_ratio / b``: on the complete graph the infimum, the
    CDP level, is approached only as the correlated part grows without bound (spec §6).
    """
    check(
        mechanism in MECHANISMS,
        f"privacy.mechanism={mechanism} is not one of: " + ", ".join(MECHANISMS),
    )
    check(bool(np.isfinite(bound)) and bound > 0, f"privacy bound b={bound} must be > 0")
    check(
        max_variance_ratio >= 1,
        f"privacy.max_variance_ratio={max_variance_ratio} must be >= 1 "
        "(1 is the local-DP variance)",
    )
    check(
        bool(np.isfinite(max_variance_ratio)),
        f"privacy.max_variance_ratio={max_variance_ratio} must be finite: "
        "on the complete graph no optimum exists",
    )
    shape = np.shape(weights)
    check(
        len(shape) == 2 and shape[0] == shape[1] > 0,
        f"privacy needs a square mixing matrix W, got shape {shape}",
    )
    num_nodes = shape[0]
    if mechanism == "local":  # neither needs W itself: no dense copy of a large graph's W
        return _local(num_nodes, 1 / bound)
    if mechanism == "central":
        column = np.full((num_nodes, 1), 1 / (num_nodes * np.sqrt(bound)))
        return NoiseCovariance(num_nodes, 0.0, NO_EDGES, 0.0, column)
    if hasattr(weights, "toarray"):
        weights = weights.toarray()
    weights = np.ascontiguousarray(weights, dtype=np.float64)
    _check_weights(mechanism, weights)
    _check_solver(solver.upper())
    unit = _unit_covariance(
        mechanism, weights.tobytes(), num_nodes, float(max_variance_ratio), solver.upper()
    )
    return unit.scaled(1 / bound)


def _local(num_nodes: int, variance: float) -> NoiseCovariance:
    return NoiseCovariance(num_nodes, variance, NO_EDGES, 0.0, None)


def _check_weights(mechanism: str, weights: np.ndarray) -> None:
    """W must be finite, symmetric and doubly stochastic (atol 1e-9); CorN needs n <= 200."""
    where = f"privacy={mechanism}"
    check(bool(np.isfinite(weights).all()), f"{where} got a mixing matrix W with inf or nan")
    asymmetry = float(np.abs(weights - weights.T).max())
    check(asymmetry <= TOLERANCE, f"{where} needs a symmetric W; |W - W^T| reaches {asymmetry:g}")
    rows = weights.sum(axis=1)
    worst = int(np.abs(rows - 1).argmax())
    check(
        abs(rows[worst] - 1) <= TOLERANCE,
        f"{where} needs a doubly stochastic W; row {worst} sums to {rows[worst]:.12g}",
    )
    check(
        mechanism != "corn" or len(weights) <= CORN_MAX_NODES,
        f"privacy=corn solves an n x n semidefinite program; num_nodes={len(weights)} "
        f"exceeds {CORN_MAX_NODES}",
    )


def _check_solver(solver: str) -> None:
    """The solver must be one that cvxpy finds installed."""
    import cvxpy as cp  # noqa: PLC0415 - slow to import; only the solved mechanisms need it

    installed = cp.installed_solvers()
    check(
        solver in installed,
        f"privacy.solver={solver} is not installed; installed: " + ", ".join(installed),
    )


@functools.lru_cache(maxsize=32)
def _unit_covariance(
    mechanism: str, weights_bytes: bytes, num_nodes: int, cap: float, solver: str
) -> NoiseCovariance:
    """The optimum at b = 1, or the optimum of a family it contains if that one is better.

    Local DP lies in the DECOR and zero-sum families, and both of those in CorN's, so their
    optima are feasible points here too; keeping the best guards the nesting
    rho_corn <= rho_decor <= rho_local against a solver that stops short (the complete
    graph, whose optimum sits on the cap, is ill-conditioned).
    """
    weights = np.frombuffer(weights_bytes).reshape(num_nodes, num_nodes)
    if mechanism == "corn":
        candidates = [_solve_corn(weights, cap, solver)] + [
            _split(_unit_covariance(smaller, weights_bytes, num_nodes, cap, solver).matrix())
            for smaller in ("decor", "zero_sum")
        ]
    else:
        candidates = [_solve_pair(mechanism, weights, cap, solver), _local(num_nodes, 1.0)]
    return min(candidates, key=lambda candidate: noise_trace(weights, candidate.matrix()))


def _feasible(candidate: NoiseCovariance, mechanism: str, solver: str) -> NoiseCovariance:
    """Multiply R by max_i (R^-1)_ii when it exceeds 1 (the family is a cone), then check."""
    worst = max_inverse_diagonal(candidate.matrix())
    check(
        bool(np.isfinite(worst)),
        f"privacy.solver={solver} returned a singular covariance for privacy={mechanism}; "
        "try privacy.solver=SCS",
    )
    if worst > 1:
        candidate = candidate.scaled(worst)
    worst = max_inverse_diagonal(candidate.matrix())
    check(
        worst <= 1 + FEASIBILITY,
        f"privacy={mechanism} covariance misses its bound: max (R^-1)_ii b = {worst:.9g}",
    )
    return candidate


def _solve_pair(mechanism: str, weights: np.ndarray, cap: float, solver: str) -> NoiseCovariance:
    """``s I + c M``, M = L (decor) or I - 11^T/n (zero_sum): the SDP in M's eigenbasis.

    With M = U diag(lambda) U^T, (R^-1)_ii = sum_k U_ik^2 / (s + c lambda_k): n inverse-
    positive terms per node, a small SOCP with the same optimum as the n LMIs.
    """
    import cvxpy as cp  # noqa: PLC0415 - slow to import; only the solved mechanisms need it

    num_nodes = len(weights)
    if mechanism == "decor":
        edges = np.argwhere(np.triu(weights, 1) != 0)
        shape = laplacian(edges, num_nodes)
    else:
        edges, shape = NO_EDGES, np.eye(num_nodes) - 1 / num_nodes
    if not shape.any():  # no edge, or a single node: only the independent part is left
        return _local(num_nodes, 1.0)
    values, vectors = np.linalg.eigh(shape)
    gram = weights.T @ weights
    independent, weight = cp.Variable(nonneg=True), cp.Variable(nonneg=True)
    trace = independent * np.trace(gram) + weight * float(np.sum(gram * shape))
    constraints = [
        vectors**2 @ cp.inv_pos(independent + weight * np.clip(values, 0, None)) <= 1,
        independent + weight * shape.diagonal().max() <= cap,
    ]
    _run(cp.Problem(cp.Minimize(num_nodes * cap * trace), constraints), mechanism, solver)
    sigma, scale = max(float(independent.value), 0.0), max(float(weight.value), 0.0)
    if mechanism == "decor":
        solution = NoiseCovariance(num_nodes, sigma, edges, scale, None)
    else:  # sqrt(c) (I - 11^T/n) is a factor: the centring projector P has P P^T = P
        solution = NoiseCovariance(num_nodes, sigma, NO_EDGES, 0.0, np.sqrt(scale) * shape)
    return _feasible(solution, mechanism, solver)


def _solve_corn(weights: np.ndarray, cap: float, solver: str) -> NoiseCovariance:
    """min Tr(W R W^T) s.t. (R^-1)_ii <= 1 and R_ii <= cap for all i, R free (spec §6).

    One LMI [[X, I], [I, R]] >= 0 with diag(X) <= 1 replaces the n LMIs [[R, e_i], [e_i^T, 1]]
    >= 0: it means X >= R^-1, so some X fits iff every (R^-1)_ii <= 1 (take X = R^-1).  Same
    optimum, about 20 times faster with CLARABEL at n = 20.
    """
    import cvxpy as cp  # noqa: PLC0415 - slow to import; only the solved mechanisms need it

    num_nodes, identity = len(weights), np.eye(len(weights))
    noise = cp.Variable((num_nodes, num_nodes), symmetric=True)
    inverse = cp.Variable((num_nodes, num_nodes), symmetric=True)
    constraints = [
        cp.bmat([[inverse, identity], [identity, noise]]) >> 0,
        cp.diag(inverse) <= 1,
        cp.diag(noise) <= cap,
    ]
    trace = cp.sum(cp.multiply(weights.T @ weights, noise))
    _run(cp.Problem(cp.Minimize(num_nodes * cap * trace), constraints), "corn", solver)
    return _feasible(_split((noise.value + noise.value.T) / 2), "corn", solver)


def _run(problem: cp.Problem, mechanism: str, solver: str) -> None:
    """Solve, turning solver failures into one-line config errors.

    The objective is rho = n Tr(W R W^T) times the cap, on the scale of R's largest entries:
    left near 1 / n, CLARABEL's stopping test accepts optima off by 1e-5 on the complete graph.
    """
    import cvxpy as cp  # noqa: PLC0415

    try:
        with warnings.catch_warnings():  # "may be inaccurate": feasibility is restored after
            warnings.simplefilter("ignore", UserWarning)
            problem.solve(solver=solver, **SOLVER_OPTIONS.get(solver, {}))
    except cp.error.SolverError as error:
        raise ConfigError(
            f"privacy.solver={solver} failed on privacy={mechanism} "
            f"({' '.join(str(error).split())}); "
            "try privacy.solver=SCS"
        ) from error
    check(
        problem.status in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE),
        f"privacy.solver={solver} ended with status {problem.status} on privacy={mechanism}; "
        "try privacy.solver=SCS",
    )


def _split(matrix: np.ndarray) -> NoiseCovariance:
    """CorN's R as s I + B B^T with s = lambda_min(R), the largest private part R allows.

    The SDP fixes only R; any s in [0, lambda_min] is optimal too, and solvers land on
    different ones.  The largest leaves the most noise once a coalition subtracts B (spec §8).
    """
    values, vectors = np.linalg.eigh(matrix)
    sigma = max(float(values[0]), 0.0)
    shared = values - sigma
    keep = shared > SINGULAR * max(float(values[-1]), 0.0)
    dense = vectors[:, keep] * np.sqrt(shared[keep]) if keep.any() else None
    return NoiseCovariance(len(matrix), sigma, NO_EDGES, 0.0, dense)
