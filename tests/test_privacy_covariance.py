import networkx as nx
import numpy as np
import pytest
import scipy.sparse
from scipy.optimize import brentq

from fedsim.errors import ConfigError
from fedsim.privacy.covariance import (
    MECHANISMS,
    _run,
    covariance,
    max_inverse_diagonal,
    noise_trace,
    normalised_noise,
)

N = 20
SOLVED = ("decor", "zero_sum", "corn")


def metropolis_hastings(graph):
    """W_ij = 1 / (max(d_i, d_j) + 1) on edges, the rest on the diagonal (spec section 2)."""
    weights = np.zeros((graph.number_of_nodes(),) * 2)
    for i, j in graph.edges():
        weights[i, j] = weights[j, i] = 1 / (max(graph.degree(i), graph.degree(j)) + 1)
    weights[np.diag_indices_from(weights)] = 1 - weights.sum(axis=1)
    return weights


def connected_erdos_renyi(p, seed=0):
    """G(N, p) from `seed`, resampled with the next seed until connected (as the paper's code)."""
    while not nx.is_connected(graph := nx.erdos_renyi_graph(N, p, seed=seed)):
        seed += 1
    return graph


GRAPHS = {
    "ring": nx.cycle_graph(N),
    "er0.2": connected_erdos_renyi(0.2),
    "er0.5": connected_erdos_renyi(0.5),
    "complete": nx.complete_graph(N),
}


def rho(mechanism, graph, bound=1.0, **settings):
    weights = metropolis_hastings(GRAPHS[graph])
    noise = covariance(mechanism, weights, bound, **settings)
    return normalised_noise(weights, noise.matrix(), bound)


def test_local_is_independent_noise_of_variance_one_over_b():
    weights = metropolis_hastings(GRAPHS["ring"])
    noise = covariance("local", weights, 0.25)
    assert (noise.matrix() == np.eye(N) / 0.25).all()
    assert noise.dense is None and noise.edges.shape == (0, 2)
    assert normalised_noise(weights, noise.matrix(), 0.25) == pytest.approx(
        N * np.sum(weights**2), rel=1e-12
    )  # n ||W||_F^2 = 20 * 20 / 3 on the ring


def test_central_is_one_shared_vector_at_the_cdp_level():
    weights = metropolis_hastings(GRAPHS["er0.2"])
    noise = covariance("central", weights, 0.5)
    np.testing.assert_allclose(noise.matrix(), np.ones((N, N)) / (N**2 * 0.5))
    assert noise_trace(weights, noise.matrix()) == pytest.approx(1 / (N * 0.5))
    assert max_inverse_diagonal(noise.matrix()) == np.inf  # no protection for a single node


def test_decor_is_independent_plus_unweighted_laplacian_of_the_support():
    graph = GRAPHS["er0.5"]
    noise = covariance("decor", metropolis_hastings(graph), 1.0)
    assert (noise.edges == np.array(sorted(tuple(sorted(edge)) for edge in graph.edges))).all()
    assert noise.independent > 0 and noise.pair_variance > 0 and noise.dense is None
    laplacian = nx.laplacian_matrix(graph, nodelist=range(N)).toarray()
    np.testing.assert_allclose(
        noise.matrix(), noise.independent * np.eye(N) + noise.pair_variance * laplacian
    )
    # each edge's +v / -v pair cancels in the network sum
    assert (noise.matrix() - noise.independent * np.eye(N)).sum(axis=0) == pytest.approx(0)


def test_nodes_without_links_keep_only_private_noise():
    for mechanism in ("decor", "zero_sum", "corn"):
        noise = covariance(mechanism, np.eye(3), 2.0)  # W = I: nothing is mixed away
        np.testing.assert_allclose(noise.matrix(), np.eye(3) / 2, rtol=1e-6)


def test_zero_sum_and_corn_factors_rebuild_their_covariance():
    weights = metropolis_hastings(GRAPHS["ring"])
    zero_sum = covariance("zero_sum", weights, 1.0)
    shared = zero_sum.dense @ zero_sum.dense.T
    scale = shared[0, 0] / (1 - 1 / N)
    np.testing.assert_allclose(shared, scale * (np.eye(N) - 1 / N), atol=1e-12)
    np.testing.assert_allclose(zero_sum.dense.sum(axis=0), 0, atol=1e-12)
    corn = covariance("corn", weights, 1.0)
    np.testing.assert_allclose(
        corn.matrix(), corn.independent * np.eye(N) + corn.dense @ corn.dense.T
    )
    # the private part is the largest one R allows: its smallest eigenvalue
    assert corn.independent == pytest.approx(np.linalg.eigvalsh(corn.matrix())[0])


def test_zero_sum_on_a_small_complete_graph_matches_the_closed_form():
    # W = 11^T/4, R = s I + c (I - 11^T/4): Tr(W R W^T) = s and (R^-1)_ii = 1/(4s) + (3/4)/(s+c);
    # with the cap s + (3/4) c = 10 both constraints are tight at the optimum
    n, cap = 4, 10.0
    slack = lambda s: 1 / (n * s) + (1 - 1 / n) ** 2 / (cap - s / n) - 1  # noqa: E731
    optimum = brentq(slack, 1 / n, 1.0)
    weights = metropolis_hastings(nx.complete_graph(n))
    noise = covariance("zero_sum", weights, 1.0, max_variance_ratio=cap)
    assert noise_trace(weights, noise.matrix()) == pytest.approx(optimum, rel=1e-6)


@pytest.mark.parametrize("graph", GRAPHS)
@pytest.mark.parametrize("mechanism", ["local", *SOLVED])
def test_every_mechanism_meets_the_bound(graph, mechanism):
    bound = 0.3
    noise = covariance(mechanism, metropolis_hastings(GRAPHS[graph]), bound)
    assert max_inverse_diagonal(noise.matrix()) <= bound * (1 + 1e-6)
    assert np.diag(noise.matrix()).max() <= 1e3 / bound * (1 + 1e-6)  # the variance cap


@pytest.mark.parametrize("graph", GRAPHS)
def test_noise_orders_corn_decor_local_all_above_the_cdp_level(graph):
    noise = {mechanism: rho(mechanism, graph) for mechanism in MECHANISMS}
    slack = 1 + 1e-6
    assert noise["central"] == pytest.approx(1)
    assert noise["corn"] <= noise["decor"] * slack and noise["decor"] <= noise["local"] * slack
    assert noise["corn"] <= noise["zero_sum"] * slack <= noise["local"] * slack**2
    assert min(noise[mechanism] for mechanism in SOLVED) >= 1 - 1e-6


def test_complete_graph_approaches_the_cdp_level_as_the_cap_grows():
    assert rho("local", "complete") == pytest.approx(N)
    for mechanism in ("decor", "corn"):
        assert 1 <= rho(mechanism, "complete") <= 1.01
        by_cap = [rho(mechanism, "complete", max_variance_ratio=cap) for cap in (10, 100, 1e4)]
        assert by_cap == sorted(by_cap, reverse=True) and by_cap[-1] < 1.0002


@pytest.mark.parametrize("mechanism", SOLVED)
def test_a_tighter_bound_rescales_r_and_keeps_rho(mechanism):
    weights = metropolis_hastings(GRAPHS["er0.5"])
    # b of (eps, delta=1e-5, C=0.1) at T=1000 for eps=10, at T=5000 for eps=3
    loose, tight = 1 / 3.59**2, 1 / 24.01**2
    np.testing.assert_allclose(
        covariance(mechanism, weights, tight).matrix(),
        covariance(mechanism, weights, loose).matrix() * loose / tight,
        rtol=1e-12,
    )
    assert rho(mechanism, "er0.5", tight) == pytest.approx(rho(mechanism, "er0.5", loose))


def test_corn_clearly_beats_decor_on_a_sparse_graph():
    decor, corn, local = (rho(m, "er0.2") for m in ("decor", "corn", "local"))
    assert decor == pytest.approx(local, rel=1e-6)  # measured: DECOR's optimum is LDP here
    assert corn < 0.85 * decor  # measured: 97.88 against 123.57


def test_a_coalition_strips_corn_down_to_its_private_part():
    weights, bound = metropolis_hastings(GRAPHS["er0.2"]), 2.0
    corn = covariance("corn", weights, bound)
    left = corn.without({7})
    np.testing.assert_allclose(left.matrix(), corn.independent * np.eye(N))
    # the outsider constraint 1/s <= b fails: s is far below the local-DP variance 1/b
    assert corn.independent * bound < 0.5
    assert max_inverse_diagonal(left.matrix()) > 2 * bound
    assert corn.without([]) is corn


def test_a_coalition_removes_only_its_own_pairs_from_decor_and_nothing_from_local():
    graph = GRAPHS["ring"]
    weights = metropolis_hastings(graph)
    decor = covariance("decor", weights, 1.0)
    left = decor.without([3])
    assert left.edges.tolist() == [list(edge) for edge in decor.edges if 3 not in edge]
    graph_without_3 = nx.Graph(graph)
    graph_without_3.remove_edges_from(list(graph.edges(3)))
    laplacian = nx.laplacian_matrix(graph_without_3, nodelist=range(N)).toarray()
    np.testing.assert_allclose(
        left.matrix(), decor.independent * np.eye(N) + decor.pair_variance * laplacian
    )
    local = covariance("local", weights, 1.0)
    assert (local.without([0, 5]).matrix() == local.matrix()).all()


def test_max_inverse_diagonal_by_hand():
    assert max_inverse_diagonal(np.diag([1.0, 2.0, 4.0])) == pytest.approx(1.0)
    assert max_inverse_diagonal(np.array([[2.0, 1.0], [1.0, 2.0]])) == pytest.approx(2 / 3)
    assert max_inverse_diagonal(np.ones((3, 3))) == np.inf


def ring_weights(n=4):
    return metropolis_hastings(nx.cycle_graph(n))


@pytest.mark.parametrize(
    ("mechanism", "weights", "bound", "settings", "message"),
    [
        ("gauss", ring_weights(), 1.0, {}, "privacy.mechanism=gauss is not one of: central, local"),
        ("local", ring_weights(), 0.0, {}, "privacy bound b=0.0 must be > 0"),
        ("decor", ring_weights(), -1.0, {}, "privacy bound b=-1.0 must be > 0"),
        (
            "corn", ring_weights(), 1.0, {"max_variance_ratio": 0.5},
            r"privacy.max_variance_ratio=0.5 must be >= 1 \(1 is the local-DP variance\)",
        ),
        (
            "decor", ring_weights(), 1.0, {"max_variance_ratio": np.inf},
            "privacy.max_variance_ratio=inf must be finite",
        ),
        ("decor", np.ones((2, 3)) / 3, 1.0, {}, r"square mixing matrix W, got shape \(2, 3\)"),
        (
            "corn", 0.5 * np.eye(3) + 0.5 * np.roll(np.eye(3), 1, axis=1), 1.0, {},
            "privacy=corn needs a symmetric W",
        ),
        (
            "zero_sum", ring_weights() + np.diag([0.1, 0, 0, 0]), 1.0, {},
            "privacy=zero_sum needs a doubly stochastic W; row 0 sums to 1.1",
        ),
        (
            "corn", np.eye(201), 1.0, {},
            "privacy=corn solves an n x n semidefinite program; num_nodes=201 exceeds 200",
        ),
        (
            "decor", ring_weights(), 1.0, {"solver": "MOSEK"},
            "privacy.solver=MOSEK is not installed; installed: .*CLARABEL",
        ),
    ],
)  # fmt: skip
def test_bad_settings_are_one_line_errors(mechanism, weights, bound, settings, message):
    with pytest.raises(ConfigError, match=message) as error:
        covariance(mechanism, weights, bound, **settings)
    assert "\n" not in str(error.value)


def test_a_failed_solve_names_its_status_and_suggests_scs():
    import cvxpy as cp

    variable = cp.Variable()
    infeasible = cp.Problem(cp.Minimize(variable), [variable >= 1, variable <= 0])
    with pytest.raises(ConfigError, match="ended with status infeasible.*privacy.solver=SCS"):
        _run(infeasible, "corn", "CLARABEL")


@pytest.mark.parametrize("mechanism", ["local", "central", "decor", "zero_sum", "corn"])
def test_the_trace_from_r_s_parts_equals_the_dense_product(mechanism):
    weights = metropolis_hastings(GRAPHS["ring"])  # DECOR's pairwise part is used here
    found = covariance(mechanism, weights, bound=0.5)
    assert found.pair_variance > 0 or mechanism != "decor"
    expected = noise_trace(weights, found.matrix())
    assert found.trace_after(weights) == pytest.approx(expected)
    assert found.trace_after(scipy.sparse.csr_array(weights)) == pytest.approx(expected)
    assert found.max_inverse_diagonal() == pytest.approx(max_inverse_diagonal(found.matrix()))
