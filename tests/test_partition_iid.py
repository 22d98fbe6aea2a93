import numpy as np
import pytest

from fedsim.errors import ConfigError
from fedsim.partitions import iid

LABELS = np.repeat(np.arange(10), 50)


def assert_disjoint(shards, total):
    joined = np.concatenate(shards)
    assert len(np.unique(joined)) == len(joined) and joined.max() < total


def test_iid_splits_everything_evenly():
    shards = iid(LABELS, num_nodes=7, seed=0)
    assert sorted(len(s) for s in shards) == [71] * 4 + [72] * 3
    assert_disjoint(shards, 500)
    assert sum(len(s) for s in shards) == 500
    assert all(s.dtype == np.int64 and np.all(np.diff(s) > 0) for s in shards)


def test_iid_with_samples_per_node():
    shards = iid(LABELS, num_nodes=10, seed=0, samples_per_node=15)
    assert [len(s) for s in shards] == [15] * 10
    assert_disjoint(shards, 500)


def test_iid_is_seeded():
    assert all(
        np.array_equal(a, b) for a, b in zip(iid(LABELS, 5, 1), iid(LABELS, 5, 1), strict=True)
    )
    assert not all(
        np.array_equal(a, b) for a, b in zip(iid(LABELS, 5, 1), iid(LABELS, 5, 2), strict=True)
    )


@pytest.mark.parametrize(
    "num_nodes, samples_per_node, message",
    [
        (10, 60, "partition.samples_per_node=60 x num_nodes=10 exceeds the 500"),
        (10, 0, "partition.samples_per_node=0 must be >= 1"),
        (501, None, "partition=iid: 500 training examples cannot give each of num_nodes=501"),
    ],
)
def test_iid_errors_name_the_setting(num_nodes, samples_per_node, message):
    with pytest.raises(ConfigError, match=message):
        iid(LABELS, num_nodes=num_nodes, seed=0, samples_per_node=samples_per_node)
