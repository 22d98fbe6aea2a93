"""Every config option composes and builds; bad values stop with one line naming the setting."""

import pytest
from conftest import compose_config

from fedsim.build import build_simulation
from fedsim.config import GROUPS, options
from fedsim.errors import ConfigError


@pytest.mark.parametrize("group, option", [(g, o) for g in GROUPS for o in options(g)])
def test_every_option_composes_and_builds(group, option):
    extra = ["strategy=dpsgd", "topology.p=0.9"] if option == "erdos_renyi" else ["strategy=dpsgd"]
    overrides = extra if group == "topology" else []
    simulation = build_simulation(compose_config(f"{group}={option}", "num_nodes=12", *overrides))
    assert simulation.federation.num_nodes == 12
    assert simulation.task.layout.size > 0


@pytest.mark.parametrize(
    "override, message",
    [
        ("strategy.sample_size=200", "strategy.sample_size=200 must be <= num_nodes=100"),
        ("strategy.sample_size=ten", "strategy.sample_size='ten' must be an integer or null"),
        ("optimizer.lr=-0.1", "optimizer.lr=-0.1 must be > 0"),
        ("optimizer.batch_size=1.5", "optimizer.batch_size=1.5 must be an integer"),
        ("num_nodes=0", "num_nodes=0 must be >= 1"),
        ("rounds=-2", "rounds=-2 must be >= 0"),
        ("eval_every=0", "eval_every=0 must be >= 1"),
        ("device=tpu", "device=tpu is not one of: cpu, cuda, cuda:N"),
        (
            "backend.vectorise=sometimes",
            "backend.vectorise='sometimes' is not one of: auto, true, false",
        ),
        ("+strategy.momentum=0.9", "strategy.momentum is not a setting of this strategy"),
        ("+colour=red", "colour is not a setting"),
        ("seed=abc", "seed='abc' must be an integer"),
    ],
)
def test_bad_values_are_named(override, message):
    with pytest.raises(ConfigError) as error:
        build_simulation(compose_config(override))
    assert message in str(error.value)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["strategy=dpsgd", "num_nodes=1"], "strategy=dpsgd needs num_nodes >= 2"),
        (
            ["strategy=dpsgd", "topology=erdos_renyi", "topology.p=0.0"],
            "needs a connected topology",
        ),
        (["partition=dirichlet", "partition.alpha=0"], "partition.alpha=0 must be > 0"),
        (
            ["strategy=dpsgd", "topology=regular", "topology.degree=3", "num_nodes=5"],
            "topology.degree=3 is impossible",
        ),
        (["partition.samples_per_node=100"], "exceeds the 1437 training examples"),
    ],
)
def test_impossible_combinations_are_named(overrides, message):
    with pytest.raises(ConfigError, match=message):
        build_simulation(compose_config(*overrides))
