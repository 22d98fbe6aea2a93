"""Synthetic(alpha, beta): shapes, a fixed data set per data_seed, heterogeneous users."""

import numpy as np
import pytest
import torch
from conftest import compose_config

from fedsim.build import build_simulation
from fedsim.data.synthetic import synthetic
from fedsim.errors import ConfigError

SMALL = {"num_users": 12, "dimension": 5, "num_classes": 4}


def per_user(data, values):
    return [values[data.train_owners == user] for user in range(data.train_owners.max() + 1)]


def test_shapes_owners_and_per_user_split():
    data = synthetic(**SMALL)
    assert data.input_shape == (5,) and data.num_classes == 4
    assert data.train_x.dtype == torch.float32 and data.train_y.dtype == torch.int64
    assert data.train_owners.shape == (len(data.train_y),)
    # Owners run 0..num_users-1 in blocks; each user holds >= 50 examples, 20% of them test.
    assert np.array_equal(np.unique(data.train_owners), np.arange(12))
    assert np.all(np.diff(data.train_owners) >= 0)
    train_sizes = np.bincount(data.train_owners)
    totals = len(data.train_y) + len(data.test_y)
    assert np.all(train_sizes >= 40) and totals >= 12 * 50
    assert len(data.test_y) == pytest.approx(0.2 * totals, rel=0.02)
    assert data.train_y.min() >= 0 and data.train_y.max() < 4


def test_the_data_set_depends_on_data_seed_only():
    first, again, other = synthetic(**SMALL), synthetic(**SMALL), synthetic(**SMALL, data_seed=1)
    assert torch.equal(first.train_x, again.train_x) and torch.equal(first.test_y, again.test_y)
    assert np.array_equal(first.train_owners, again.train_owners)
    assert first.train_x.shape != other.train_x.shape or not torch.equal(
        first.train_x, other.train_x
    )


def test_users_differ_in_labels_and_inputs():
    data = synthetic(alpha=1.0, beta=1.0, **SMALL)
    histograms = np.array(
        [np.bincount(y.numpy(), minlength=4) / len(y) for y in per_user(data, data.train_y)]
    )
    # Total variation distance between users' label distributions: far from IID.
    distances = 0.5 * np.abs(histograms[:, None] - histograms[None]).sum(axis=2)
    assert distances.max() > 0.5
    means = np.array([x.mean(0).numpy() for x in per_user(data, data.train_x)])
    assert means.std(axis=0).mean() > 0.5  # v_k ~ N(B_k, 1): users' inputs are shifted


def test_inputs_have_the_power_law_covariance_around_each_users_mean():
    data = synthetic(num_users=30, dimension=3, num_classes=2)
    residuals = torch.cat([x - x.mean(0) for x in per_user(data, data.train_x)])
    expected = torch.arange(1, 4, dtype=torch.float32) ** -1.2
    assert torch.allclose(residuals.var(0), expected, rtol=0.1)


def test_bad_settings_are_named():
    with pytest.raises(ConfigError, match=r"data.alpha=-1 must be >= 0"):
        synthetic(alpha=-1)
    with pytest.raises(ConfigError, match=r"data.test_fraction=1.0 must lie in \(0, 1\)"):
        synthetic(test_fraction=1.0)
    with pytest.raises(ConfigError, match=r"data.num_classes=1 must be an integer >= 2"):
        synthetic(num_classes=1)


def test_composes_from_the_config():
    config = compose_config(
        "data=synthetic",
        "data.num_users=5",
        "data.dimension=4",
        "num_nodes=5",
        "strategy.sample_size=2",
    )
    simulation = build_simulation(config)
    assert simulation.task.dataset.input_shape == (4,)
