"""The geometric median by smoothed Weiszfeld (RFA): the point of least weighted distance sum."""

import numpy as np
import pytest
import torch
from scipy.optimize import minimize
from test_backend_ray import metrics

from fedsim.aggregators.geometric_median import GeometricMedian
from fedsim.errors import ConfigError


def test_symmetric_points_give_their_centre():
    """A square's corners and its centre: the median is the centre, itself a model received,
    where the plain Weiszfeld step would divide by a zero distance (smoothed: epsilon)."""
    rows = torch.tensor([[[1.0, 2.0], [3.0, 2.0], [3.0, 4.0], [1.0, 4.0], [2.0, 3.0]]])
    weights = torch.tensor([[0.2, 0.2, 0.2, 0.2, 0.2]])
    combined = GeometricMedian(iterations=10).combine(rows, weights, torch.zeros(1, 2))
    torch.testing.assert_close(combined, torch.tensor([[2.0, 3.0]]))


def test_one_far_point_barely_moves_the_median():
    """{(0, 0), (1, 0), (0, 1), (10, 10)} in convex position: the median is where the
    diagonals cross, (1/2, 1/2), whereas the mean is (11/4, 11/4)."""
    rows = torch.tensor([[[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [10.0, 10.0]]], dtype=torch.float64)
    combined = GeometricMedian(iterations=30).combine(rows, torch.ones(1, 4), torch.zeros(1, 2))
    assert np.allclose(combined.numpy(), [[0.5, 0.5]], atol=1e-3)


def test_weighted_median_agrees_with_a_plain_minimisation():
    generator = torch.Generator().manual_seed(0)
    rows = torch.randn(2, 6, 5, generator=generator, dtype=torch.float64)
    rows[:, 0] += 50  # one far model
    weights = torch.rand(2, 6, generator=generator, dtype=torch.float64) + 0.5
    combined = GeometricMedian(iterations=300, epsilon=1e-9).combine(rows, weights, rows[:, 0])
    for target in range(2):
        points, alphas = rows[target].numpy(), weights[target].numpy()

        def cost(z, points=points, alphas=alphas):
            return alphas @ np.linalg.norm(points - z, axis=1)

        best = minimize(cost, points.mean(axis=0), method="Nelder-Mead",
                        options={"xatol": 1e-10, "fatol": 1e-12, "maxiter": 40000})  # fmt: skip
        assert np.allclose(combined[target].numpy(), best.x, atol=1e-5)
        assert cost(combined[target].numpy()) <= best.fun + 1e-9


def test_no_iterations_is_the_weighted_mean():
    rows = torch.tensor([[[0.0], [4.0]]])
    combined = GeometricMedian(iterations=0).combine(rows, torch.tensor([[3.0, 1.0]]), rows[:, 0])
    assert combined.tolist() == [[1.0]]


def test_negative_iterations_or_no_smoothing_is_refused():
    with pytest.raises(ConfigError, match="aggregator.iterations=-1 must be >= 0"):
        GeometricMedian(iterations=-1)
    with pytest.raises(ConfigError, match="aggregator.epsilon=0.0 must be > 0"):
        GeometricMedian(epsilon=0.0)


@pytest.mark.parametrize(
    "strategy",
    [
        ["strategy=fedavg", "strategy.sample_size=7"],
        ["strategy=dpsgd", "topology=regular", "topology.degree=6"],
    ],
)
def test_geometric_median_runs_two_rounds(strategy, tmp_path):
    rows = metrics(tmp_path, "run", "aggregator=geometric_median", "rounds=2", *strategy)
    assert np.isfinite(rows[rows.metric == "loss"].value).all()
