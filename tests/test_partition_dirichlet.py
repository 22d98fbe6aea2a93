import numpy as np
import pytest

from fedsim import rng
from fedsim.errors import ConfigError
from fedsim.partitions import dirichlet, dirichlet_per_class, dirichlet_per_node, label_histograms
from fedsim.partitions.dirichlet import split_floor_remainder

LABELS = np.repeat(np.arange(10), 50)


def assert_covers(shards, total):
    np.testing.assert_array_equal(np.sort(np.concatenate(shards)), np.arange(total))
    assert all(s.dtype == np.int64 and np.all(np.diff(s) > 0) for s in shards)


def classes_per_node(shards):
    return (label_histograms(LABELS, shards, 10) > 0).sum(axis=1).mean()


def nodes_per_class(shards):
    return (label_histograms(LABELS, shards, 10) > 0).sum(axis=0).mean()


# dirichlet_per_node


def test_per_node_gives_equal_sizes_and_covers_everything():
    shards = dirichlet_per_node(LABELS, num_nodes=7, seed=0, alpha=0.1)
    assert [len(s) for s in shards] == [72] * 3 + [71] * 4
    assert_covers(shards, 500)


def test_per_node_renormalises_when_a_class_runs_out():
    labels = np.array([0] + [1] * 9)  # class 0 runs out after one draw
    shards = dirichlet_per_node(labels, num_nodes=2, seed=0, alpha=0.01)
    assert [len(s) for s in shards] == [5, 5]
    assert_covers(shards, 10)


def test_per_node_small_alpha_gives_fewer_classes_per_node():
    skewed = dirichlet_per_node(LABELS, num_nodes=10, seed=0, alpha=0.1)
    balanced = dirichlet_per_node(LABELS, num_nodes=10, seed=0, alpha=100.0)
    assert classes_per_node(skewed) < 5 < classes_per_node(balanced)


def test_per_node_is_seeded():
    first, again, other = (dirichlet_per_node(LABELS, 5, seed) for seed in (1, 1, 2))
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other, strict=True))


@pytest.mark.parametrize(
    "num_nodes, alpha, message",
    [
        (5, 0, "partition.alpha=0 must be > 0"),
        (501, 0.5, "partition=dirichlet_per_node: 500 training examples cannot give each of"),
    ],
)
def test_per_node_errors_name_the_setting(num_nodes, alpha, message):
    with pytest.raises(ConfigError, match=message):
        dirichlet_per_node(LABELS, num_nodes=num_nodes, seed=0, alpha=alpha)


# dirichlet_per_class


def test_floor_remainder_rule_on_a_hand_case():
    parts = split_floor_remainder(np.arange(10), np.array([0.26, 0.35, 0.39]))
    # floor(2.6) = 2, floor(3.5) = 3, the last node the remaining 5 (not round(3.9) = 4)
    assert [p.tolist() for p in parts] == [[0, 1], [2, 3, 4], [5, 6, 7, 8, 9]]


def test_per_class_assigns_each_class_contiguously_in_data_order():
    labels = np.array([1, 0, 0, 1, 0, 1, 0, 0, 1, 0, 1, 0])
    generator = rng.generator(7, rng.PARTITION)
    proportions = [generator.dirichlet([1.0, 1.0, 1.0]) for _ in range(2)]
    expected = [[], [], []]
    for label, p in zip([0, 1], proportions, strict=True):
        for node, part in enumerate(split_floor_remainder(np.flatnonzero(labels == label), p)):
            expected[node] += part.tolist()
    shards = dirichlet_per_class(labels, 3, seed=7, alpha=1.0, min_samples_per_node=0)
    assert [s.tolist() for s in shards] == [sorted(e) for e in expected]


def test_per_class_covers_everything_and_small_alpha_uses_fewer_nodes_per_class():
    skewed = dirichlet_per_class(LABELS, num_nodes=10, seed=0, alpha=0.1)
    balanced = dirichlet_per_class(LABELS, num_nodes=10, seed=0, alpha=100.0)
    assert_covers(skewed, 500)
    assert_covers(balanced, 500)
    assert nodes_per_class(skewed) < 5 < nodes_per_class(balanced)


def test_per_class_guarantees_a_minimum_per_node():
    shards = dirichlet_per_class(LABELS, num_nodes=20, seed=0, alpha=0.5, min_samples_per_node=5)
    assert min(len(s) for s in shards) >= 5


def test_per_class_is_seeded():
    first, again, other = (dirichlet_per_class(LABELS, 5, seed) for seed in (1, 1, 2))
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other, strict=True))


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"alpha": 0}, "partition.alpha=0 must be > 0"),
        ({"min_samples_per_node": -1}, "partition.min_samples_per_node=-1 must be >= 0"),
        (
            {"min_samples_per_node": 60},
            "partition.min_samples_per_node=60 x num_nodes=10 exceeds the 500 training examples",
        ),
        (
            {"alpha": 0.01, "min_samples_per_node": 40, "max_attempts": 3},
            "partition=dirichlet_per_class with alpha=0.01 left a node with fewer than "
            "min_samples_per_node=40 examples in 3 draws",
        ),
    ],
)
def test_per_class_errors_name_the_setting(settings, message):
    with pytest.raises(ConfigError, match=message):
        dirichlet_per_class(LABELS, num_nodes=10, seed=0, **settings)


# dirichlet (Flower Datasets' DirichletPartitioner)


def test_flower_cuts_each_class_at_the_floor_of_its_cumulative_proportions():
    labels = np.repeat([0, 1], [7, 5])
    shards = dirichlet(labels, num_nodes=3, seed=4, alpha=1.0, min_partition_size=0)
    generator = rng.generator(4, rng.PARTITION)
    expected = [[], [], []]
    for label in (0, 1):
        members = np.flatnonzero(labels == label)
        cuts = (np.cumsum(generator.dirichlet(np.ones(3))) * len(members)).astype(int)[:-1]
        for node, piece in enumerate(np.split(members, cuts)):
            expected[node] += piece.tolist()
    assert [s.tolist() for s in shards] == expected
    assert_covers(shards, 12)


def test_flower_draws_again_until_every_node_holds_min_partition_size():
    shards = dirichlet(LABELS, num_nodes=10, seed=0, alpha=0.3, min_partition_size=25)
    assert min(len(s) for s in shards) >= 25
    assert_covers(shards, 500)


def test_flower_self_balancing_stops_feeding_nodes_above_the_average():
    sizes = {
        balancing: [len(s) for s in dirichlet(LABELS, 10, 0, 0.1, 0, self_balancing=balancing)]
        for balancing in (False, True)
    }
    # a node gets no class once above 500 / 10 examples: at most 50 plus one class's 50
    assert max(sizes[True]) <= 100 < max(sizes[False])
    assert sum(sizes[True]) == 500


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"alpha": -1}, "partition.alpha=-1 must be > 0"),
        ({"min_partition_size": -1}, "partition.min_partition_size=-1 must be >= 0"),
        ({"min_partition_size": 51}, "partition.min_partition_size=51 x num_nodes=10 exceeds"),
        (
            {"alpha": 0.01, "min_partition_size": 45},
            "partition=dirichlet with alpha=0.01 left a node with fewer than "
            "min_partition_size=45 examples in 11 draws; raise partition.alpha",
        ),
    ],
)
def test_flower_errors_name_the_setting(settings, message):
    with pytest.raises(ConfigError, match=message):
        dirichlet(LABELS, num_nodes=10, seed=0, **settings)
