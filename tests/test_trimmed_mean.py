"""The coordinate-wise trimmed mean: each coordinate's extremes dropped, the rest averaged."""

import numpy as np
import pytest
import torch
from test_backend_ray import metrics

from fedsim.aggregators.trimmed_mean import TrimmedMean
from fedsim.errors import ConfigError

# Five models of two coordinates; the outliers (100 and -50) sit in different rows.
ROWS = torch.tensor([[[1.0, 10.0], [2.0, -50.0], [3.0, 0.0], [4.0, 20.0], [100.0, 5.0]]])
OWN = torch.zeros(1, 2)


def test_trimmed_mean_of_five_rows_by_hand():
    """beta=0.2 drops floor(0.2 * 5) = 1 value per end: mean(2, 3, 4) = 3, mean(0, 5, 10) = 5;
    beta=0.4 drops 2 (the median); beta=0.19 drops none (the mean)."""
    weights = torch.tensor([[0.9, 0.025, 0.025, 0.025, 0.025]])  # ignored
    assert TrimmedMean(beta=0.2).combine(ROWS, weights, OWN).tolist() == [[3.0, 5.0]]
    assert TrimmedMean(beta=0.4).combine(ROWS, weights, OWN).tolist() == [[3.0, 5.0]]
    assert TrimmedMean(beta=0.19).combine(ROWS, weights, OWN).tolist() == [[22.0, -3.0]]


def test_each_target_trims_its_own_rows():
    rows = torch.stack([ROWS[0], -ROWS[0]])
    combined = TrimmedMean(beta=0.2).combine(rows, torch.ones(2, 5), torch.zeros(2, 2))
    assert combined.tolist() == [[3.0, 5.0], [-3.0, -5.0]]


def test_the_trimmed_count_is_floor_of_beta_times_count():
    assert [TrimmedMean(beta=0.29).trimmed(100), TrimmedMean(beta=0.2).trimmed(7)] == [29, 1]


@pytest.mark.parametrize("beta", [-0.1, 0.5])
def test_beta_outside_zero_to_half_is_refused(beta):
    with pytest.raises(ConfigError, match=f"aggregator.beta={beta} must be in"):
        TrimmedMean(beta=beta)


@pytest.mark.parametrize(
    "strategy",
    [
        ["strategy=fedavg", "strategy.sample_size=7"],
        ["strategy=dpsgd", "topology=regular", "topology.degree=6"],
    ],
)
def test_trimmed_mean_runs_two_rounds(strategy, tmp_path):
    rows = metrics(tmp_path, "run", "aggregator=trimmed_mean", "rounds=2", *strategy)
    assert np.isfinite(rows[rows.metric == "loss"].value).all()
