"""Structured-config schemas: made from signatures, extended by every YAML, used by Hydra."""

import dataclasses
import pickle
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, Optional

import pytest
import yaml
from conftest import compose_config
from hydra.errors import ConfigCompositionException
from omegaconf import MISSING, OmegaConf

from fedsim import schemas
from fedsim.config import GROUPS, RunConfig, config_dir, options
from fedsim.errors import ConfigError
from fedsim.runner import precheck


@pytest.mark.parametrize(
    "hint, expected",
    [
        (int, int),
        (float | None, Optional[float]),  # noqa: UP045  (OmegaConf's spelling)
        (Path, str),
        (str | Path | None, Optional[str]),  # noqa: UP045
        (Sequence[int], list[int]),
        (tuple[int, ...], list[int]),
        (Literal["mean", "median"], str),
        (int | str, Any),
        (object, Any),
    ],
)
def test_type_hints_become_types_omegaconf_holds(hint, expected):
    assert schemas.option_type(hint) == expected


def test_a_schema_is_its_targets_signature():
    made = schemas.schema("optimizer", "fedsim.training.sgd.SGD")
    fields = {field.name: (field.type, field.default) for field in dataclasses.fields(made)}
    assert fields == {
        "_target_": (str, "fedsim.training.sgd.SGD"),
        "_partial_": (bool, False),
        "lr": (float, 0.05),
        "momentum": (float, 0.0),
        "weight_decay": (float, 0.0),
        "batch_size": (int, 16),
    }


def test_runtime_inputs_are_no_settings_and_a_required_one_is_missing():
    made = schemas.schema("churn", "fedsim.simulated.churn.trace")
    fields = {field.name: field.default for field in dataclasses.fields(made)}
    assert fields == {
        "_target_": "fedsim.simulated.churn.trace",
        "_partial_": True,
        "path": MISSING,
    }


@pytest.mark.parametrize("group, option", [(g, o) for g in GROUPS for o in options(g)])
def test_every_option_extends_its_targets_schema(group, option):
    text = yaml.safe_load((config_dir() / group / f"{option}.yaml").read_text())
    target = text["_target_"]
    assert text["defaults"] == [f"{schemas.schema_path(group, target)}@_here_", "_self_"]
    node = compose_config(f"{group}={option}")[group]
    assert OmegaConf.get_type(node) is getattr(schemas, schemas.schema(group, target).__name__)


def test_the_top_level_has_the_run_schema():
    assert OmegaConf.get_type(compose_config()) is RunConfig


def test_hydra_converts_values_to_the_schemas_types():
    config = compose_config("strategy=dpsgd", "privacy=corn", "privacy.epsilon=5", "seed='3'")
    assert config.privacy.epsilon == 5.0 and isinstance(config.privacy.epsilon, float)
    assert config.seed == 3


def test_hydra_rejects_a_wrong_type_while_composing():
    with pytest.raises(ConfigCompositionException):
        compose_config("model.hidden=[a]")


@pytest.mark.parametrize(
    "override, message",
    [
        ("model.hidden=[a]", "model.hidden[0]='a' must be an integer"),
        ("model.hidden=5", "model.hidden=5 must be a list of integers"),
        ("optimizer.lr={a:1}", "optimizer.lr={'a': 1} must be a number"),
        ("num_nodes=null", "num_nodes=None must be an integer"),
        (
            "~optimizer.lr",
            "~optimizer.lr: a setting cannot be deleted; set optimizer.lr=VALUE instead",
        ),
    ],
)
def test_a_schemas_rejection_is_one_line_naming_the_setting(override, message):
    with pytest.raises(ConfigError) as error:
        precheck([override])
    assert str(error.value) == message


def test_a_composed_config_unpickles_in_a_fresh_process():
    """Ray workers of a sweep load pickled configs: their schema types must import by name."""
    config = compose_config("strategy=dpsgd", "privacy=corn")
    loaded = subprocess.run(
        [
            sys.executable,
            "-c",
            "import pickle, sys; c = pickle.load(sys.stdin.buffer); "
            "print(type(c).__name__, c.privacy._metadata.object_type.__name__, c.privacy.epsilon)",
        ],
        input=pickle.dumps(config),
        capture_output=True,
        check=True,
    )
    assert loaded.stdout.decode().split() == ["DictConfig", "PrivacyPrivacy", "10.0"]


def test_a_schema_is_made_when_a_composed_config_first_extends_it():
    """A run makes the schemas of its options only, not every target's (a second of start-up)."""
    code = (
        "from hydra import compose, initialize_config_dir\n"
        "from fedsim import schemas\n"
        "from fedsim.config import config_dir\n"
        "made = lambda: sorted(n for n in vars(schemas) if n.startswith('Strategy'))\n"
        "before = made()\n"
        "with initialize_config_dir(config_dir=str(config_dir()), version_base='1.3'):\n"
        "    compose('config', overrides=['strategy=dpsgd'])\n"
        "print(before, made())\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["[]", "['StrategyDPSGD']"]
