import numpy as np
import pytest

from fedsim.errors import ConfigError
from fedsim.partitions import label_histograms, labels_per_node

LABELS = np.repeat(np.arange(10), 50)


def held_labels(labels, shards, num_classes=10):
    return label_histograms(labels, shards, num_classes) > 0


def test_one_label_per_node_gives_node_i_label_i():
    labels = np.array([2, 0, 1, 1, 0, 2])
    result = labels_per_node(labels, num_nodes=3, seed=0, labels_per_node=1)
    assert [s.tolist() for s in result] == [[1, 4], [2, 3], [0, 5]]


def test_nodes_sharing_a_label_split_it_evenly_and_disjointly():
    labels = np.repeat(np.arange(3), [7, 6, 5])
    result = labels_per_node(labels, num_nodes=6, seed=0, labels_per_node=1)
    # nodes i and i + 3 share label i: 7 -> 4 + 3, 6 -> 3 + 3, 5 -> 3 + 2
    assert [len(s) for s in result] == [4, 3, 3, 3, 3, 2]
    for node in range(3):
        pair = np.concatenate([result[node], result[node + 3]])
        np.testing.assert_array_equal(np.sort(pair), np.flatnonzero(labels == node))


@pytest.mark.parametrize("num_nodes", [10, 25])
@pytest.mark.parametrize("k", [1, 2, 3, 9, 10])
def test_every_node_holds_exactly_k_labels_starting_with_its_own(num_nodes, k):
    result = labels_per_node(LABELS, num_nodes=num_nodes, seed=4, labels_per_node=k)
    held = held_labels(LABELS, result)
    assert held.sum(axis=1).tolist() == [k] * num_nodes
    assert all(held[node, node % 10] for node in range(num_nodes))


@pytest.mark.parametrize("k", [1, 2, 5])
def test_every_example_assigned_at_most_once_and_held_labels_entirely(k):
    result = labels_per_node(LABELS, num_nodes=10, seed=1, labels_per_node=k)
    joined = np.concatenate(result)
    assert len(np.unique(joined)) == len(joined)
    # with 10 nodes every label is held (node i holds label i): all examples are used
    np.testing.assert_array_equal(np.sort(joined), np.arange(500))
    assert all(s.dtype == np.int64 and np.all(np.diff(s) > 0) for s in result)


def test_each_label_is_split_evenly_over_its_holders():
    result = labels_per_node(LABELS, num_nodes=10, seed=2, labels_per_node=2)
    counts = label_histograms(LABELS, result, 10)
    for label in range(10):
        shares = counts[counts[:, label] > 0, label]
        assert shares.sum() == 50 and shares.max() - shares.min() <= 1


def test_labels_nobody_holds_are_left_out():
    result = labels_per_node(LABELS, num_nodes=3, seed=0, labels_per_node=1)
    assert [np.unique(LABELS[s]).tolist() for s in result] == [[0], [1], [2]]
    assert sum(len(s) for s in result) == 150


def test_is_seeded():
    first, again, other = (labels_per_node(LABELS, 10, seed) for seed in (1, 1, 2))
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other, strict=True))


@pytest.mark.parametrize(
    "num_nodes, k, message",
    [
        (10, 11, "partition.labels_per_node=11 must be between 1 and the 10 classes"),
        (10, 0, "partition.labels_per_node=0 must be between 1 and the 10 classes"),
        (501, 1, "partition=labels_per_node: 500 training examples cannot give each of"),
    ],
)
def test_errors_name_the_setting_in_one_line(num_nodes, k, message):
    with pytest.raises(ConfigError, match=message) as error:
        labels_per_node(LABELS, num_nodes=num_nodes, seed=0, labels_per_node=k)
    assert "\n" not in str(error.value)


def test_a_label_with_fewer_examples_than_holders_is_refused():
    labels = np.repeat(np.arange(10), [5] + [55] * 9)  # 120 nodes: 12 hold label 0
    with pytest.raises(ConfigError, match="class 0 has 5 examples for the 12 nodes holding it"):
        labels_per_node(labels, num_nodes=120, seed=0, labels_per_node=1)
