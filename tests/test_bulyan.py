"""Bulyan: k - 2f models chosen by repeated Krum, then each coordinate averaged near its median."""

import numpy as np
import pytest
import torch
from test_backend_ray import metrics

from fedsim.aggregators.bulyan import Bulyan
from fedsim.errors import ConfigError

# Seven one-coordinate models, one far (f=1): theta = 7 - 2 = 5 selected, beta = 5 - 2 = 3 kept.
ROWS = torch.tensor([[[0.0], [1.0], [3.0], [4.0], [6.0], [7.5], [100.0]]])
OWN = torch.zeros(1, 1)


def test_repeated_krum_selects_by_hand():
    """Among 7, scores over the 4 nearest: 3 has 1 + 4 + 9 + 9 = 23, 4 has 26.25 (the least
    two).  Among the 6 left, over 3: 4 has 4 + 9 + 12.25 = 25.25, 6 has 31.25.  Among 5, over
    2: 1 has 1 + 25 = 26, 6 has 27.25.  Among {0, 6, 7.5, 100}, over 1 (at least one): 6 and
    7.5 tie at 2.25, and 7.5 is nearer all the others (8614.75 < 8874.25); among {0, 6, 100},
    0 and 6 tie at 36, and 6 is nearer all (8872 < 10036)."""
    assert Bulyan(f=1).selected(ROWS).tolist() == [[2, 3, 1, 5, 4]]


def test_the_selection_does_not_depend_on_the_order_received():
    order = torch.tensor([6, 4, 5, 0, 3, 2, 1])
    assert order[Bulyan(f=1).selected(ROWS[:, order])].tolist() == [[2, 3, 1, 5, 4]]


def test_bulyan_averages_the_three_selected_values_nearest_their_median():
    """Selected {3, 4, 1, 7.5, 6}, median 4: the nearest three are 4, 3, 6, mean 13/3."""
    combined = Bulyan(f=1).combine(ROWS, torch.ones(1, 7), OWN)
    torch.testing.assert_close(combined, torch.tensor([[13 / 3]]))


def test_each_target_and_coordinate_by_itself():
    """Scaling and shifting every model scales and shifts the aggregate; a second coordinate
    that negates the first (same distances but for sqrt 2) gives the negated value."""
    rows = torch.cat([torch.cat([ROWS, -ROWS], dim=2), torch.cat([2 * ROWS + 1, ROWS], dim=2)])
    combined = Bulyan(f=1).combine(rows, torch.ones(2, 7), torch.zeros(2, 2))
    torch.testing.assert_close(combined, torch.tensor([[13 / 3, -13 / 3], [29 / 3, 13 / 3]]))


def test_bulyan_without_byzantine_senders_is_the_mean():
    rows = torch.randn(2, 5, 3, generator=torch.Generator().manual_seed(0))
    combined = Bulyan(f=0).combine(rows, torch.ones(2, 5), torch.zeros(2, 3))
    torch.testing.assert_close(combined, rows.mean(dim=1))


def test_too_few_models_received_is_refused_in_one_line():
    Bulyan(f=1).check_received(7)
    with pytest.raises(ConfigError, match=r"f=1 needs at least 4f \+ 3 = 7 .* received 6"):
        Bulyan(f=1).combine(ROWS[:, :6], torch.ones(1, 6), OWN)
    with pytest.raises(ConfigError, match="aggregator.f=-1 must be >= 0"):
        Bulyan(f=-1)


@pytest.mark.parametrize(
    "strategy",
    [
        ["strategy=fedavg", "strategy.sample_size=7"],
        ["strategy=dpsgd", "topology=regular", "topology.degree=6"],
    ],
)
def test_bulyan_runs_two_rounds(strategy, tmp_path):
    rows = metrics(tmp_path, "run", "aggregator=bulyan", "rounds=2", *strategy)
    assert np.isfinite(rows[rows.metric == "loss"].value).all()
