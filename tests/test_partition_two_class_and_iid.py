import numpy as np
import pytest

from fedsim.errors import ConfigError
from fedsim.partitions import label_histograms, two_class_and_iid

LABELS = np.repeat(np.arange(10), 60)


def test_niid2_six_nodes_five_with_two_classes_and_one_iid():
    """The paper's FMNIST setting: each class in 6 shards, 5 to its two-class node, 1 to the
    IID node; every node holds 100 examples."""
    shards = two_class_and_iid(LABELS, num_nodes=6, seed=0, two_class_nodes=5)
    counts = label_histograms(LABELS, shards, 10)
    expected = np.zeros((6, 10), dtype=np.int64)
    for node in range(5):
        expected[node, [2 * node, 2 * node + 1]] = 50
    expected[5] = 10
    np.testing.assert_array_equal(counts, expected)


def test_every_example_is_held_once_and_shards_are_sorted():
    shards = two_class_and_iid(LABELS, num_nodes=13, seed=3, two_class_nodes=10)
    joined = np.concatenate(shards)
    np.testing.assert_array_equal(np.sort(joined), np.arange(len(LABELS)))
    assert all(s.dtype == np.int64 and np.all(np.diff(s) > 0) for s in shards)


def test_ten_two_class_nodes_pair_up_on_each_class_pair():
    """Nodes i and i + 5 hold the same two classes, each half of the two-class share."""
    counts = label_histograms(LABELS, two_class_and_iid(LABELS, 12, 1, two_class_nodes=10), 10)
    for node in range(5):
        np.testing.assert_array_equal(counts[node], counts[node + 5])
        assert np.flatnonzero(counts[node]).tolist() == [2 * node, 2 * node + 1]
    assert (counts[10:] == 5).all()  # 60 examples in 12 shards of 5
    assert (counts.sum(axis=1) == 50).all()


def test_the_partition_depends_on_the_seed_only():
    first = two_class_and_iid(LABELS, 6, seed=2)
    again = two_class_and_iid(LABELS, 6, seed=2)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    other = two_class_and_iid(LABELS, 6, seed=3)
    assert not all(np.array_equal(a, b) for a, b in zip(first, other, strict=True))


@pytest.mark.parametrize(
    "labels, num_nodes, two_class_nodes, message",
    [
        (np.repeat(np.arange(3), 10), 4, 3, "pairs the classes, but the training data has 3"),
        (LABELS, 6, 4, "partition.two_class_nodes=4 must be a multiple of 5"),
        (LABELS, 6, 10, "partition.two_class_nodes=10 must be a multiple of 5"),
        (LABELS, 6, -5, "partition.two_class_nodes=-5 must be a multiple of 5"),
        (LABELS, 61, 5, "class 0 has 60 examples, fewer than num_nodes=61"),
    ],
)
def test_impossible_settings_are_one_config_error(labels, num_nodes, two_class_nodes, message):
    with pytest.raises(ConfigError, match=message):
        two_class_and_iid(labels, num_nodes, seed=0, two_class_nodes=two_class_nodes)
