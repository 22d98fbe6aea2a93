import numpy as np
import pytest

from fedsim.errors import ConfigError
from fedsim.partitions import label_histograms, shards

LABELS = np.repeat(np.arange(10), 50)


def test_hand_case_gives_whole_label_sorted_shards():
    labels = np.array([2, 0, 1, 1, 0, 2])  # sorted by label, stable: [1, 4], [2, 3], [0, 5]
    result = shards(labels, num_nodes=3, seed=0, shards_per_node=1)
    assert sorted(tuple(s) for s in result) == [(0, 5), (1, 4), (2, 3)]


@pytest.mark.parametrize("num_nodes, shards_per_node", [(5, 2), (25, 2), (10, 5)])
def test_covers_everything_with_at_most_shards_per_node_classes(num_nodes, shards_per_node):
    result = shards(LABELS, num_nodes=num_nodes, seed=3, shards_per_node=shards_per_node)
    joined = np.concatenate(result)
    np.testing.assert_array_equal(np.sort(joined), np.arange(500))
    assert [len(s) for s in result] == [500 // num_nodes] * num_nodes
    classes_per_node = (label_histograms(LABELS, result, 10) > 0).sum(axis=1)
    assert classes_per_node.max() <= shards_per_node


def test_five_nodes_two_shards_each_get_two_whole_classes():
    classes_per_node = (label_histograms(LABELS, shards(LABELS, 5, seed=0), 10) > 0).sum(axis=1)
    assert classes_per_node.tolist() == [2] * 5


def test_is_seeded():
    first, again, other = (shards(LABELS, 5, seed) for seed in (1, 1, 2))
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other, strict=True))


@pytest.mark.parametrize(
    "num_nodes, shards_per_node, message",
    [
        (5, 0, "partition.shards_per_node=0 must be >= 1"),
        (
            100,
            6,
            "partition.shards_per_node=6 x num_nodes=100 exceeds the 500 training examples",
        ),
    ],
)
def test_errors_name_the_setting(num_nodes, shards_per_node, message):
    with pytest.raises(ConfigError, match=message):
        shards(LABELS, num_nodes=num_nodes, seed=0, shards_per_node=shards_per_node)
