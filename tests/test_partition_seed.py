"""``partition.seed``: the partition's own seed, null for the run's."""

import re

import numpy as np
import pytest
from conftest import compose_config

from fedsim.build import build_simulation
from fedsim.errors import ConfigError
from fedsim.runner import precheck

SMALL = [
    "num_nodes=6",
    "strategy.sample_size=3",
    "partition=dirichlet_per_node",
    "partition.alpha=0.3",
]


def histograms(*overrides):
    return build_simulation(compose_config(*SMALL, *overrides)).label_histograms


def test_a_fixed_partition_seed_holds_the_partition_while_the_seed_varies():
    fixed = [histograms(f"seed={seed}", "partition.seed=7") for seed in (0, 1)]
    np.testing.assert_array_equal(*fixed)
    np.testing.assert_array_equal(fixed[0], histograms("seed=7"))  # null: the run's seed
    assert not np.array_equal(histograms("seed=0"), histograms("seed=1"))


@pytest.mark.parametrize(
    "override, message",
    [
        ("partition.seed=-1", "partition.seed=-1 must be >= 0 (or null: the run's seed)"),
        ("partition.seed=abc", "partition.seed='abc' must be an integer or null"),
    ],
)
def test_a_bad_partition_seed_is_one_clear_error(override, message, tmp_path):
    with pytest.raises(ConfigError, match=re.escape(message)):
        precheck([*SMALL, override, f"hydra.run.dir={tmp_path / 'run'}"])
