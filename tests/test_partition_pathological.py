import numpy as np
import pytest

from fedsim.errors import ConfigError
from fedsim.partitions import label_histograms, pathological

LABELS = np.repeat(np.arange(10), 50)


def test_deterministic_mode_gives_node_i_classes_i_to_i_plus_k_and_cuts_classes_in_order():
    labels = np.repeat([0, 1, 2], 3)
    shards = pathological(
        labels, 3, seed=0, num_classes_per_partition=2, class_assignment_mode="deterministic"
    )
    # node 0: classes 0, 1; node 1: 1, 2; node 2: 2, 0. Class 0 = [0, 1, 2] -> [0, 1] | [2].
    assert [s.tolist() for s in shards] == [[0, 1, 3, 4], [5, 6, 7], [2, 8]]


@pytest.mark.parametrize("mode", ["random", "first-deterministic", "deterministic"])
@pytest.mark.parametrize("k", [1, 3, 10])
def test_every_node_holds_exactly_k_classes_each_split_evenly(mode, k):
    shards = pathological(
        LABELS, 20, seed=3, num_classes_per_partition=k, class_assignment_mode=mode
    )
    counts = label_histograms(LABELS, shards, 10)
    assert ((counts > 0).sum(axis=1) == k).all()
    for label in range(10):
        shares = counts[counts[:, label] > 0, label]
        assert len(shares) == 0 or (shares.sum() == 50 and shares.max() - shares.min() <= 1)
    joined = np.concatenate(shards)
    assert len(np.unique(joined)) == len(joined)


def test_first_deterministic_gives_node_i_class_i_mod_c_first():
    shards = pathological(
        LABELS, 25, seed=1, num_classes_per_partition=2, class_assignment_mode="first-deterministic"
    )
    held = label_histograms(LABELS, shards, 10) > 0
    assert all(held[node, node % 10] for node in range(25))


def test_the_classes_depend_on_the_seed_only_in_random_modes():
    same = [pathological(LABELS, 10, s, 2, "deterministic") for s in (0, 1)]
    assert all((a == b).all() for a, b in zip(*same, strict=True))
    drawn = [pathological(LABELS, 10, s, 2, "random") for s in (0, 1)]
    assert any(len(a) != len(b) or (a != b).any() for a, b in zip(*drawn, strict=True))


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"class_assignment_mode": "first"}, "partition.class_assignment_mode=first is not one "
         "of: random, first-deterministic, deterministic"),
        ({"num_classes_per_partition": 11}, "partition.num_classes_per_partition=11 must be "
         "between 1 and the 10 classes"),
        ({"num_classes_per_partition": 0}, "partition.num_classes_per_partition=0 must be"),
    ],
)  # fmt: skip
def test_bad_settings_are_one_clear_error(settings, message):
    with pytest.raises(ConfigError, match=message):
        pathological(LABELS, 10, 0, **settings)


def test_more_holders_than_examples_of_a_class_is_refused():
    # node 0 and node 2 hold class 0, which has one example
    with pytest.raises(ConfigError, match="class 0 has 1 examples for the 2 nodes holding it"):
        pathological(np.array([0, 1, 1, 1]), 3, 0, 1, "deterministic")
