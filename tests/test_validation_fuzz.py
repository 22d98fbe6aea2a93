"""Fuzzing the config checks: any override list builds, or stops with one ConfigError line.

In-process, random and adversarial overrides (wrong types, negative, huge and empty
values, lists, null, unknown keys, deletions, unknown options, combinations of group
choices) are composed and built; through the CLI, a few of them run for one round.
"""

import atexit
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import compose_config, examples
from helpers import memory_of
from hydra.errors import HydraException
from hypothesis import event, given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from sklearn.datasets import dump_svmlight_file

from fedsim.build import build_simulation
from fedsim.config import GROUPS, TOP_LEVEL, config_dir, options
from fedsim.errors import ConfigError
from fedsim.runner import precheck
from fedsim.schemas import schema

FILES = Path(tempfile.mkdtemp(prefix="fedsim-fuzz-"))  # needed while strategies are built
atexit.register(shutil.rmtree, FILES, ignore_errors=True)


def _option(group: str, option: str):
    return OmegaConf.load(config_dir() / group / f"{option}.yaml")


# Every setting of an option's schema: those its YAML lists and the target's other parameters.
SETTINGS = {
    (g, o): [field.name for field in dataclasses.fields(schema(g, _option(g, o)._target_))]
    for g in GROUPS
    for o in options(g)
}
TARGETS = {g: sorted({str(_option(g, o)._target_) for o in options(g)}) for g in GROUPS}
DEFAULTS = {
    group: str(option)
    for entry in OmegaConf.load(config_dir() / "config.yaml").defaults
    if OmegaConf.is_dict(entry)
    for group, option in entry.items()
    if group in GROUPS
}
# Values a user might type by mistake, as Hydra override text.
SMALL = [str(value) for value in range(-3, 13)] + ["0.5", "1.5", "-0.5", "1e-300"]
WRONG = ["", "abc", "'5'", "null", "true", "false", "[]", "[1,2]", "[-3]", "['a']", "{a:1}"]
SPECIAL = ["nan", "inf", "-inf", "1e300"]
# Huge integers: beyond 64 bits, and 10^12, whose arrays no machine can allocate at once.
HUGE = [str(10**12), str(2**63), str(10**20), str(-(10**20))]
BOGUS_TARGETS = ["nope.Nope", "fedsim.strategies.Nope", "builtins.int", "5"]


def _files() -> dict[str, str]:
    """The files that some options need, written once."""
    ring = FILES / "ring.txt"
    ring.write_text("".join(f"{i} {(i + 1) % 6}\n" for i in range(6)))
    np.save(FILES / "w.npy", np.full((6, 6), 1 / 6))
    features = np.random.default_rng(0).random((60, 5))
    dump_svmlight_file(features, np.arange(60) % 2, str(FILES / "train.svm"))
    return {
        "topology.path": str(ring),
        "mixing.path": str(FILES / "w.npy"),
        "data.path": str(FILES / "train.svm"),
    }


NEEDED = _files()
# What an option needs beside itself to have a chance to build on 6 nodes.
HELPERS = {
    ("topology", "file"): [f"topology.path={NEEDED['topology.path']}"],
    ("mixing", "matrix"): [f"mixing.path={NEEDED['mixing.path']}"],
    ("data", "svmlight"): [f"data.path={NEEDED['data.path']}"],
    ("data", "synthetic"): ["data.num_users=12", "data.dimension=8"],
    ("strategy", "fedavg"): ["strategy.sample_size=3"],
    ("strategy", "s2s"): ["strategy.num_sampled=3"],
    ("strategy", "s2a"): ["strategy.num_sampled=3"],
}


def _builds_topology(choices: dict[str, str]) -> bool:
    return choices["strategy"] != "fedavg" or choices["partition"] == "by_component"


@st.composite
def fuzzed_overrides(draw, values=SMALL + WRONG + SPECIAL + HUGE, keys_per_example=3):
    """A list of overrides: group choices, their helpers, then adversarial settings."""
    choices = dict(DEFAULTS)
    for group in draw(st.lists(st.sampled_from(GROUPS), max_size=3, unique=True)):
        choices[group] = draw(st.sampled_from(options(group)))
    overrides = [f"{group}={option}" for group, option in choices.items()]
    overrides += ["num_nodes=6"]
    for group, option in choices.items():
        overrides += HELPERS.get((group, option), [])
    for _ in range(draw(st.integers(0, keys_per_example))):
        overrides.append(draw(_setting(choices, values)))
    return choices, overrides


@st.composite
def _setting(draw, choices, values):
    kind = draw(st.sampled_from(["top", "group", "group", "group", "unknown", "delete", "target"]))
    value = draw(st.sampled_from(values))
    if kind == "top":
        return f"++{draw(st.sampled_from(sorted(TOP_LEVEL)))}={value}"
    group = draw(st.sampled_from(GROUPS))
    keys = SETTINGS[group, choices[group]]
    if kind == "unknown":
        return draw(st.sampled_from([f"++{group}.colour={value}", f"++colour={value}"]))
    if kind == "delete":
        return f"~{group}.{draw(st.sampled_from(keys))}"
    if kind == "target":
        target = draw(st.sampled_from(TARGETS[group] + BOGUS_TARGETS))
        return draw(
            st.sampled_from([f"++{group}._target_={target}", f"++{group}._partial_={value}"])
        )
    settings_ = [key for key in keys if not key.startswith("_")] or ["_partial_"]
    return f"++{group}.{draw(st.sampled_from(settings_))}={value}"


def _assert_one_line(error: ConfigError) -> None:
    message = str(error)
    assert message and "\n" not in message, repr(message)


@settings(max_examples=examples(50))
@given(fuzzed_overrides())
def test_fuzzed_overrides_build_or_name_the_problem(case):
    choices, overrides = case
    try:
        config = compose_config(*overrides)
    except (HydraException, OmegaConfBaseException):
        event("refused by Hydra at composition (a schema, a deletion)")
        with pytest.raises(ConfigError) as error:
            precheck(overrides)  # as the CLI composes: the same refusal, as one line
        _assert_one_line(error.value)
        return
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            simulation = build_simulation(config)
    except ConfigError as error:
        event("ConfigError")
        _assert_one_line(error)
        return
    except Exception as error:
        raise AssertionError(f"{overrides} raised {type(error).__name__}: {error}") from error
    event("built")
    assert memory_of(simulation).total > 0


# Raw text a user could type: a sweep without -m, unknown options and keys, odd characters.
RAW = st.one_of(
    st.sampled_from(
        [
            "strategy=fedprox",
            "model=gpt",
            "strategy.sample_sise=3",
            "seed=0,1",
            "num_nodes=range(2,4)",
            "colour=red",
            "+colour=red",
            "~strategy",
            "~num_nodes",
            "strategy=",
            "=3",
            "num_nodes==3",
            "num_nodes=${oops}",
            "optimizer.lr=${num_nodes}",
            "model.hidden=[${num_nodes}]",
            "data.test_fraction=${hydra:job.name}",
            "'num_nodes'=3",
            "num_nodes=[",
            "device=cuda:x",
            "hydra.job.chdir=true",
        ]
    ),
    st.builds(
        "{}={}".format,
        st.sampled_from(["num_nodes", "seed", "optimizer.lr", "strategy", "data.root"]),
        st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=8),
    ),
)


@settings(max_examples=examples(60))
@given(st.lists(RAW, min_size=1, max_size=3))
def test_raw_command_lines_are_checked_as_the_cli_does(overrides):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            precheck(["num_nodes=6", "strategy.sample_size=3", *overrides])
    except ConfigError as error:
        event("ConfigError")
        _assert_one_line(error)
    else:
        event("passed the checks")


@pytest.mark.parametrize("sweep", [[], ["-m", "seed=0,1"]])
def test_an_override_hydra_refuses_is_refused_even_when_a_later_one_replaces_it(sweep):
    overrides = ["++checkpoint_every=0.5", "++checkpoint_every=0"]  # found by the fuzz test
    with pytest.raises((HydraException, OmegaConfBaseException)):
        compose_config(*overrides)
    with pytest.raises(ConfigError, match=r"^checkpoint_every=0.5 must be an integer$"):
        precheck([*sweep, *overrides])


@pytest.mark.parametrize(
    "override",
    [
        f"data.tile={10**12}",
        f"data.image_size={10**12}",
        f"model.hidden=[{10**12}]",
        "data.test_fraction=0.001",
    ],
)
def test_factory_failures_are_config_errors(override):
    with pytest.raises(ConfigError):
        build_simulation(compose_config("num_nodes=6", "strategy.sample_size=3", override))


def test_huge_num_nodes_with_a_topology_is_a_config_error():
    with pytest.raises(ConfigError):
        build_simulation(compose_config("strategy=dpsgd", f"num_nodes={10**12}"))


FEDSIM = [sys.executable, "-m", "fedsim.cli", "run"]


@pytest.mark.slow
@settings(max_examples=examples(8))
@given(fuzzed_overrides(values=SMALL + WRONG, keys_per_example=2))
def test_fuzzed_command_lines_run_or_stop_with_one_line(case):
    _, overrides = case
    overrides = [o for o in overrides if not o.startswith("num_nodes=")]
    with tempfile.TemporaryDirectory() as folder:
        run_dir = Path(folder) / "run"
        result = subprocess.run(
            [
                *FEDSIM,
                *overrides,
                "num_nodes=6",
                "rounds=1",
                "progress=false",
                f"hydra.run.dir={run_dir}",
            ],
            cwd=folder,
            capture_output=True,
            text=True,
            env={**os.environ, "HYDRA_FULL_ERROR": "0"},
            timeout=120,
        )
        assert "Traceback" not in result.stderr, (overrides, result.stderr)
        assert result.returncode in (0, 2), (overrides, result.returncode, result.stderr)
        if result.returncode == 0:
            event("ran")
            summary = json.loads((run_dir / "summary.json").read_text())
            assert summary["status"] == "completed"
        else:
            event("config error")
            lines = result.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("fedsim: config error: "), (
                overrides,
                result.stderr,
            )
            assert not run_dir.exists()
