import numpy as np

from fedsim.partitions import label_histograms


def test_counts_each_nodes_examples_per_class():
    labels = np.array([0, 2, 2, 1, 0, 2])
    shards = [np.array([0, 1, 2]), np.array([], dtype=np.int64), np.array([3, 4, 5])]
    expected = np.array([[1, 0, 2], [0, 0, 0], [1, 1, 1]])
    np.testing.assert_array_equal(label_histograms(labels, shards, num_classes=3), expected)


def test_classes_absent_from_every_shard_get_zero_columns():
    histograms = label_histograms(np.array([1, 1]), [np.array([0]), np.array([1])], 4)
    np.testing.assert_array_equal(histograms, [[0, 1, 0, 0], [0, 1, 0, 0]])
