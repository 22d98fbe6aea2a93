import numpy as np
import pytest

from fedsim.data.partition import dirichlet, iid
from fedsim.errors import ConfigError

LABELS = np.repeat(np.arange(10), 50)


def assert_disjoint(shards, total):
    joined = np.concatenate(shards)
    assert len(np.unique(joined)) == len(joined) and joined.max() < total


def test_iid_splits_everything_evenly():
    shards = iid(LABELS, num_nodes=7, seed=0)
    assert sorted(len(s) for s in shards) == [71] * 4 + [72] * 3
    assert_disjoint(shards, 500)
    assert sum(len(s) for s in shards) == 500


def test_iid_with_samples_per_node():
    shards = iid(LABELS, num_nodes=10, seed=0, samples_per_node=15)
    assert [len(s) for s in shards] == [15] * 10
    assert_disjoint(shards, 500)
    with pytest.raises(
        ConfigError, match="partition.samples_per_node=60 x num_nodes=10 exceeds the 500"
    ):
        iid(LABELS, num_nodes=10, seed=0, samples_per_node=60)


def test_partitions_are_seeded():
    assert all(
        np.array_equal(a, b) for a, b in zip(iid(LABELS, 5, 1), iid(LABELS, 5, 1), strict=True)
    )
    assert not all(
        np.array_equal(a, b) for a, b in zip(iid(LABELS, 5, 1), iid(LABELS, 5, 2), strict=True)
    )


def test_dirichlet_covers_all_examples_and_skews_labels():
    skewed = dirichlet(LABELS, num_nodes=10, seed=0, alpha=0.1)
    assert_disjoint(skewed, 500)
    assert sum(len(s) for s in skewed) == 500
    balanced = dirichlet(LABELS, num_nodes=10, seed=0, alpha=100.0)

    def mean_classes_per_node(shards):
        return np.mean([len(np.unique(LABELS[s])) for s in shards])

    assert mean_classes_per_node(skewed) < 5 < mean_classes_per_node(balanced)


def test_dirichlet_guarantees_a_minimum_per_node():
    shards = dirichlet(LABELS, num_nodes=20, seed=0, alpha=0.5, min_samples_per_node=5)
    assert min(len(s) for s in shards) >= 5


def test_dirichlet_rejects_bad_alpha():
    with pytest.raises(ConfigError, match="partition.alpha=0 must be > 0"):
        dirichlet(LABELS, num_nodes=5, seed=0, alpha=0)
