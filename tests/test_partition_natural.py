import numpy as np
import pytest

from fedsim import rng
from fedsim.errors import ConfigError
from fedsim.partitions import natural

# Six writers (ids not contiguous), interleaved as in a real data set.
OWNERS = np.array([30, 10, 10, 50, 20, 30, 60, 40, 10, 50, 20, 60])
LABELS = np.arange(len(OWNERS)) % 3


def examples_of(owner_ids):
    return np.flatnonzero(np.isin(OWNERS, owner_ids)).tolist()


def test_one_owner_per_node_when_counts_match():
    shards = natural(LABELS, num_nodes=6, seed=0, owners=OWNERS)
    assert sorted(s.tolist() for s in shards) == sorted(examples_of([o]) for o in np.unique(OWNERS))


def test_sorted_owners_shuffled_and_dealt_out_evenly():
    order = rng.generator(5, rng.PARTITION).permutation(6)
    owners_of_node = np.array_split(np.unique(OWNERS)[order], 3)
    shards = natural(LABELS, num_nodes=3, seed=5, owners=OWNERS)
    assert [s.tolist() for s in shards] == [examples_of(group) for group in owners_of_node]
    assert all(s.dtype == np.int64 for s in shards)


def test_four_nodes_get_one_or_two_whole_owners_and_cover_everything():
    shards = natural(LABELS, num_nodes=4, seed=1, owners=OWNERS)
    owners_per_node = [len(np.unique(OWNERS[s])) for s in shards]
    assert sorted(owners_per_node) == [1, 1, 2, 2]
    assert sorted(np.concatenate(shards).tolist()) == list(range(12))


def test_is_seeded():
    first, again = (natural(LABELS, 3, seed=2, owners=OWNERS) for _ in range(2))
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    splits = {tuple(map(tuple, natural(LABELS, 3, seed, owners=OWNERS))) for seed in range(5)}
    assert len(splits) > 1


@pytest.mark.parametrize(
    "num_nodes, owners, message",
    [
        (
            3,
            None,
            r"partition=natural needs a data set with a natural split \(femnist, synthetic\)",
        ),
        (7, OWNERS, "partition=natural: the data set has 6 owners, fewer than num_nodes=7"),
        (3, OWNERS[:5], "partition=natural: 5 owner ids for 12 training examples"),
    ],
)
def test_errors_name_the_problem(num_nodes, owners, message):
    with pytest.raises(ConfigError, match=message):
        natural(LABELS, num_nodes=num_nodes, seed=0, owners=owners)
