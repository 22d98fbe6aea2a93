"""Every config option composes and builds; bad values stop with one line naming the setting."""

import importlib.util

import numpy as np
import pytest
from conftest import compose_config
from helpers import ray_settings, settings_lines, smoke_settings
from sklearn.datasets import dump_svmlight_file

from fedsim import catalogue
from fedsim.build import build_simulation
from fedsim.config import GROUPS, PRESETS, options
from fedsim.errors import ConfigError
from fedsim.runner import precheck

NEEDS_FILES = {"mnist", "fashion_mnist", "cifar10", "femnist"}


def option_overrides(group: str, option: str, tmp_path) -> list[str]:
    """What an option needs beside itself and its ``# smoke:`` line (tests/helpers.py) to
    build on 12 nodes of the embedded data: files, and options of other groups."""
    if group == "topology":
        if option == "components":  # disconnected: built for a partition that needs components
            return ["partition=by_component"]
        extra = {
            "erdos_renyi": ["topology.p=0.9"],
            "file": [f"topology.path={ring_file(tmp_path)}"],
        }
        return ["strategy=dpsgd", *extra.get(option, [])]
    if group == "mixing":
        extra = {"matrix": [f"mixing.path={uniform_matrix(tmp_path)}"]}
        return ["strategy=dpsgd", *extra.get(option, [])]
    if (group, option) == ("network", "file"):
        (tmp_path / "speeds.txt").write_text("0.001\n0.002\n")
        (tmp_path / "latency.txt").write_text("0 20\n20 0\n")
        return [
            f"network.compute_file={tmp_path / 'speeds.txt'}",
            f"network.latency_file={tmp_path / 'latency.txt'}",
        ]
    if (group, option) == ("network", "device_profiles"):
        (tmp_path / "devices.csv").write_text("computation,communication\n50,500\n20,8000\n")
        return [f"network.path={tmp_path / 'devices.csv'}"]
    if (group, option) == ("churn", "trace"):
        (tmp_path / "trace.csv").write_text("node,start_s,end_s\n" + "0,0,\n" * 1)
        return [f"churn.path={tmp_path / 'trace.csv'}", "strategy=modest"]
    if (group, option) == ("data", "svmlight"):
        return [f"data.path={svmlight_file(tmp_path)}"]
    if (group, option) == ("data", "synthetic") or option == "natural":
        return ["data=synthetic", "data.num_users=24", "data.dimension=8"]
    if option == "by_component":
        return ["topology=components"]
    if group == "privacy" and option not in ("none", "rqm"):  # noise before gossip: D-PSGD's
        return ["strategy=dpsgd", "topology=ring"]
    if group == "model" and option not in ("mlp", "logreg"):
        return ["data.image_size=32"]
    return []


def ring_file(tmp_path):
    path = tmp_path / "ring.txt"
    path.write_text("".join(f"{i} {(i + 1) % 12}\n" for i in range(12)))
    return path


def uniform_matrix(tmp_path):
    np.save(tmp_path / "w.npy", np.full((12, 12), 1 / 12))
    return tmp_path / "w.npy"


def svmlight_file(tmp_path):
    features = np.random.default_rng(0).random((60, 5))
    dump_svmlight_file(features, np.arange(60) % 2, str(tmp_path / "train.svm"))
    return tmp_path / "train.svm"


@pytest.mark.parametrize("group, option", [(g, o) for g in GROUPS for o in options(g)])
def test_every_option_composes_and_builds(group, option, tmp_path):
    overrides = [f"{group}={option}", "num_nodes=12"]
    if group != "strategy":
        overrides += smoke_settings(group, option)
    overrides += option_overrides(group, option, tmp_path)
    strategy = next((o.split("=")[1] for o in overrides if o.startswith("strategy=")), "fedavg")
    # The strategy's smoke line (none: its defaults), but for what the option sets itself
    # (an aggregator that needs more models per receiver: strategy.sample_size).
    given = {override.split("=")[0] for override in overrides}
    overrides += [o for o in smoke_settings("strategy", strategy) if o.split("=")[0] not in given]
    config = compose_config(*overrides)
    if option in NEEDS_FILES:  # real data sets: without their files, one clear line
        with pytest.raises(ConfigError, match="torchvision|data.root|does not exist|download"):
            build_simulation(config)
        return
    if option in ("tensorboard", "wandb") and importlib.util.find_spec(option) is None:
        with pytest.raises(ConfigError, match=rf"pip install 'fedsim\[{option}\]'"):
            build_simulation(config)  # an optional library missing: one line naming its extra
        return
    simulation = build_simulation(config)
    assert simulation.federation.num_nodes == 12
    assert simulation.task.layout.size > 0


@pytest.mark.parametrize("kind", ["smoke", "ray"])
@pytest.mark.parametrize("strategy", options("strategy"))
def test_every_strategy_builds_with_its_test_settings(strategy, kind):
    """A strategy's ``# smoke:`` and ``# ray:`` lines build on 12 nodes (the Ray parity run's
    settings too, without starting Ray): a broken line fails here, not silently later."""
    settings = {"smoke": smoke_settings, "ray": ray_settings}[kind]("strategy", strategy)
    config = compose_config(f"strategy={strategy}", "num_nodes=12", *settings)
    simulation = build_simulation(config)
    assert simulation.federation.num_nodes == 12


@pytest.mark.parametrize("group, option", [(g, o) for g in (*GROUPS, *PRESETS) for o in options(g)])
def test_settings_lines_hold_overrides_below_the_description(group, option):
    description, _ = catalogue.describe(group, option)
    assert not description.startswith(("smoke:", "ray:")), "a settings line is not a description"
    for overrides in settings_lines(group, option).values():
        assert overrides, "an empty settings line"
        assert all("=" in override for override in overrides), overrides


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
        ("seed=-1", "seed=-1 must be >= 0"),
        ("seed=100000000000000000000", "seed=100000000000000000000 is out of range"),
        ("model.hidden=[100000000000000000000]", "model.hidden=[100000000000000000000] is out"),
        ("init_scheme=abc", "init_scheme=abc is not one of: default, xavier, kaiming"),
        ("device=cuda:x", "device=cuda:x is not one of: cpu, cuda, cuda:N"),
        ("num_nodes=${oops}", "num_nodes cannot be resolved: Interpolation key 'oops' not found"),
        ("~num_nodes", "num_nodes is missing; it must be an integer"),
        ("~model._partial_", "~model._partial_: a setting cannot be deleted; set model._partial_"),
        (
            "++model._partial_=false",
            "model._partial_=false must be true: fedsim passes input_shape",
        ),
        ("++strategy._partial_=true", "strategy._partial_=true must be false"),
        ("strategy._target_=nope.Nope", "strategy._target_=nope.Nope cannot be used: Error load"),
        ("++strategy._target_=5", "strategy._target_=5 cannot be used: Error loading '5'"),
        ("++strategy._target_=", "strategy._target_='' must name a class or function"),
        (
            "mixing._target_=fedsim.topology.graphs.ring",
            "mixing._target_=fedsim.topology.graphs.ring does not take graph",
        ),
        (
            "model._target_=fedsim.data.svmlight.svmlight",
            "model._target_=fedsim.data.svmlight.svmlight does not take input_shape, num_classes",
        ),
    ],
)
def test_bad_values_are_named(override, message):
    with pytest.raises(ConfigError) as error:
        precheck([override])  # as `fedsim run OVERRIDE` composes (schemas) and builds
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
        (["partition=dirichlet_per_node", "partition.alpha=0"], "partition.alpha=0.0 must be > 0"),
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


def test_interpolations_resolve_before_types_are_checked():
    config = compose_config("num_nodes=12", "model.hidden=[${num_nodes}]", "strategy.sample_size=3")
    assert build_simulation(config).task.layout.shapes[0] == (12, 64)
