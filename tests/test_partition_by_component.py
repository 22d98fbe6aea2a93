import numpy as np
import pytest

from fedsim.errors import ConfigError
from fedsim.partitions import by_component

LABELS = np.repeat(np.arange(10), 30)
COMPONENTS = [[0, 2, 4], [1, 3]]


def label_sets(shards):
    return [set(np.unique(LABELS[s]).tolist()) for s in shards]


def test_components_get_disjoint_contiguous_classes_shared_within():
    shards = by_component(LABELS, num_nodes=5, seed=0, components=COMPONENTS)
    sets = label_sets(shards)
    assert sets[0] == sets[2] == sets[4] == {0, 1, 2, 3, 4}
    assert sets[1] == sets[3] == {5, 6, 7, 8, 9}
    assert [len(s) for s in shards] == [50, 75, 50, 75, 50]
    np.testing.assert_array_equal(np.sort(np.concatenate(shards)), np.arange(300))
    assert all(s.dtype == np.int64 and np.all(np.diff(s) > 0) for s in shards)


def test_classes_per_component_leaves_the_rest_unused():
    shards = by_component(LABELS, 5, seed=0, components=COMPONENTS, classes_per_component=2)
    assert label_sets(shards) == [{0, 1}, {2, 3}, {0, 1}, {2, 3}, {0, 1}]
    assert sum(len(s) for s in shards) == 4 * 30


def test_uneven_class_groups_differ_by_at_most_one():
    components = [[0], [1], [2]]
    assert label_sets(by_component(LABELS, 3, seed=0, components=components)) == [
        {0, 1, 2, 3},
        {4, 5, 6},
        {7, 8, 9},
    ]


def test_is_seeded():
    first, again, other = (by_component(LABELS, 5, s, components=COMPONENTS) for s in (1, 1, 2))
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other, strict=True))


@pytest.mark.parametrize(
    "labels, components, classes_per_component, message",
    [
        (
            LABELS,
            [[i] for i in range(11)],
            None,
            "partition=by_component: 10 classes cannot give each of the 11 topology components "
            "its own; use at most 10 components",
        ),
        (
            LABELS,
            COMPONENTS,
            6,
            "partition.classes_per_component=6 x 2 components exceeds the 10 classes",
        ),
        (LABELS, COMPONENTS, 0, "partition.classes_per_component=0 must be >= 1 or null"),
        (
            LABELS,
            [[0, 1], [3, 4]],
            None,
            "partition=by_component: the components must hold each of the num_nodes=5 nodes",
        ),
        (
            np.array([0, 0, 1, 1, 1, 1]),
            COMPONENTS,
            None,
            r"partition=by_component: component 0 has 3 nodes but only 2 examples of its classes "
            r"\[0\]",
        ),
    ],
)
def test_errors_name_the_problem(labels, components, classes_per_component, message):
    with pytest.raises(ConfigError, match=message):
        by_component(
            labels,
            num_nodes=max(max(component) for component in components) + 1,
            seed=0,
            components=components,
            classes_per_component=classes_per_component,
        )
