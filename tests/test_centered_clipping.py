"""Centered clipping: from the receiver's own model, a step by the clipped weighted offsets."""

import numpy as np
import pandas as pd
import pytest
import torch
from test_backend_ray import metrics

from fedsim.aggregators.centered_clipping import CenteredClipping
from fedsim.errors import ConfigError

ROWS = torch.tensor([[[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [10.0, 10.0]]], dtype=torch.float64)
WEIGHTS = torch.tensor([[1.0, 2.0, 3.0, 4.0]])  # normalised: 0.1, 0.2, 0.3, 0.4
OWN = torch.full((1, 2), 7.0, dtype=torch.float64)


def test_a_huge_radius_gives_the_weighted_mean_in_one_iteration():
    """(0.2 * 1 + 0.4 * 10, 0.3 * 1 + 0.4 * 10) from anywhere: the own model drops out."""
    combined = CenteredClipping(tau=1e9).combine(ROWS, WEIGHTS, OWN)
    torch.testing.assert_close(combined, torch.tensor([[4.2, 4.3]], dtype=torch.float64))


def test_a_small_radius_clips_every_offset_by_hand():
    """From (0, 0) with tau=0.5: (1, 0) and (0, 1) move by 0.5 each, (10, 10) by 0.5 along the
    diagonal: 0.2 (0.5, 0) + 0.3 (0, 0.5) + 0.4 (0.5, 0.5) / sqrt(2)."""
    combined = CenteredClipping(tau=0.5).combine(ROWS, WEIGHTS, torch.zeros(1, 2).double())
    half = 0.4 * 0.5 / np.sqrt(2)
    torch.testing.assert_close(combined, torch.tensor([[0.1 + half, 0.15 + half]]).double())


@pytest.mark.parametrize("iterations", [1, 3])
def test_each_iteration_moves_at_most_tau(iterations):
    generator = torch.Generator().manual_seed(0)
    rows = torch.randn(3, 5, 8, generator=generator) * 10
    own = torch.randn(3, 8, generator=generator)
    combined = CenteredClipping(tau=0.1, iterations=iterations).combine(rows, torch.ones(3, 5), own)
    moved = (combined - own).norm(dim=1)
    assert (moved <= 0.1 * iterations + 1e-6).all() and (moved > 0).all()


def test_iterations_approach_a_fixed_point_among_the_honest_models():
    """Three models at 0 and one at 100 (1-d; their mean 25), tau=1, from 0.5: each step adds
    sum_i clip(x_i - v, 1) / 4 = (-3 v + 1) / 4 for v in [0, 1], which vanishes at 1/3."""
    rows = torch.tensor([[[0.0], [0.0], [0.0], [100.0]]], dtype=torch.float64)
    own = torch.tensor([[0.5]], dtype=torch.float64)
    combined = CenteredClipping(tau=1.0, iterations=60).combine(rows, torch.ones(1, 4), own)
    torch.testing.assert_close(combined, torch.tensor([[1 / 3]], dtype=torch.float64))


def test_gossip_with_tau_zero_keeps_the_own_model():
    combined = CenteredClipping(tau=0.0).combine(ROWS, WEIGHTS, OWN)
    assert combined.tolist() == OWN.tolist()


def test_a_negative_radius_or_no_iteration_is_refused():
    with pytest.raises(ConfigError, match="aggregator.tau=-1.0 must be >= 0"):
        CenteredClipping(tau=-1.0)
    with pytest.raises(ConfigError, match="aggregator.iterations=0 must be >= 1"):
        CenteredClipping(iterations=0)


@pytest.mark.parametrize(
    "strategy",
    [
        ["strategy=fedavg", "strategy.sample_size=7"],
        ["strategy=dpsgd", "topology=regular", "topology.degree=6"],
    ],
)
def test_a_huge_radius_runs_as_aggregator_mean(strategy, tmp_path):
    """The centre (the previous global model at the server, the own model in gossip) drops
    out and the plan's weights are kept: the same metrics as the plain average."""
    clipped = metrics(tmp_path, "clipped", "aggregator=centered_clipping",
                      "aggregator.tau=1e9", "rounds=2", *strategy)  # fmt: skip
    mean = metrics(tmp_path, "mean", "aggregator=mean", "rounds=2", *strategy)
    pd.testing.assert_frame_equal(clipped.drop(columns="value"), mean.drop(columns="value"))
    assert np.allclose(clipped.value, mean.value, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "strategy",
    [
        ["strategy=fedavg", "strategy.sample_size=7"],
        ["strategy=dpsgd", "topology=regular", "topology.degree=6"],
    ],
)
def test_centered_clipping_runs_two_rounds(strategy, tmp_path):
    rows = metrics(tmp_path, "run", "aggregator=centered_clipping", "rounds=2", *strategy)
    assert np.isfinite(rows[rows.metric == "loss"].value).all()
