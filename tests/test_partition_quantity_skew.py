import numpy as np
import pytest

from fedsim import rng
from fedsim.errors import ConfigError
from fedsim.partitions import quantity_skew

LABELS = np.repeat(np.arange(10), 50)


def test_sizes_follow_the_dirichlet_draw_on_top_of_the_minimum():
    proportions = rng.generator(4, rng.PARTITION).dirichlet([0.5] * 4)
    cuts = np.floor(np.cumsum(proportions)[:-1] * (500 - 4 * 10)).astype(int)
    expected = np.diff([0, *cuts, 460]) + 10
    shards = quantity_skew(LABELS, num_nodes=4, seed=4, alpha=0.5, min_samples_per_node=10)
    assert [len(s) for s in shards] == expected.tolist()
    np.testing.assert_array_equal(np.sort(np.concatenate(shards)), np.arange(500))
    assert all(s.dtype == np.int64 and np.all(np.diff(s) > 0) for s in shards)


def test_small_alpha_gives_more_unequal_sizes_and_the_minimum_holds():
    skewed = [len(s) for s in quantity_skew(LABELS, 20, seed=0, alpha=0.1, min_samples_per_node=3)]
    balanced = [len(s) for s in quantity_skew(LABELS, 20, seed=0, alpha=100.0)]
    assert min(skewed) >= 3 and min(balanced) >= 1
    assert np.std(skewed) > 3 * np.std(balanced)


def test_minimum_times_nodes_equal_to_total_gives_exact_sizes():
    shards = quantity_skew(LABELS, num_nodes=50, seed=0, alpha=0.1, min_samples_per_node=10)
    assert [len(s) for s in shards] == [10] * 50


def test_is_seeded():
    first, again, other = (quantity_skew(LABELS, 5, seed) for seed in (1, 1, 2))
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other, strict=True))


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"alpha": -1.0}, "partition.alpha=-1.0 must be > 0"),
        ({"min_samples_per_node": -2}, "partition.min_samples_per_node=-2 must be >= 0"),
        (
            {"min_samples_per_node": 51},
            "partition.min_samples_per_node=51 x num_nodes=10 exceeds the 500 training examples",
        ),
    ],
)
def test_errors_name_the_setting(settings, message):
    with pytest.raises(ConfigError, match=message):
        quantity_skew(LABELS, num_nodes=10, seed=0, **settings)
