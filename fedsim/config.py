"""Checks of a composed config before anything is built: names, types and top-level values.

Every problem becomes one :class:`~fedsim.errors.ConfigError` line naming the setting, the
value and what is allowed.
"""

from __future__ import annotations

import difflib
import inspect
import types
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from hydra.utils import get_object
from omegaconf import DictConfig, OmegaConf

from fedsim.errors import ConfigError, check

GROUPS = ("strategy", "topology", "mixing", "data", "partition", "model", "optimizer", "backend")
PRESETS = ("experiment",)  # groups of @package _global_ presets: chosen, never a config key
# Arguments that the engine passes at run time, never settings of a config file.
RUNTIME_INPUTS: dict[str, frozenset[str]] = {
    "topology": frozenset({"num_nodes", "seed"}),
    "mixing": frozenset({"graph"}),
    "partition": frozenset({"labels", "num_nodes", "seed", "owners", "components"}),
    "model": frozenset({"input_shape", "num_classes"}),
}
TOP_LEVEL: dict[str, type | tuple[type, ...]] = {
    "num_nodes": int,
    "rounds": int,
    "seed": int,
    "device": str,
    "eval_every": int,
    "eval_nodes": int,
    "header_bytes": int,
    "progress": bool,
    "init": str,
    "init_scheme": str,
}


def config_dir() -> Path:
    """The directory of fedsim's Hydra configs (``configs/`` of the source tree)."""
    return Path(__file__).resolve().parent / "conf"


def options(group: str) -> list[str]:
    """The config options of ``group`` (its YAML file names)."""
    return sorted(path.stem for path in (config_dir() / group).glob("*.yaml"))


def check_choice(group: str, choice: str) -> None:
    """``choice`` must be an option of ``group``."""
    check(
        choice in options(group),
        f"{group}={choice} is not an option; choose one of: {', '.join(options(group))}",
    )


def check_config(cfg: DictConfig) -> None:
    """Check top-level settings and every group's keys and value types."""
    for name, expected in TOP_LEVEL.items():
        value = cfg.get(name)
        check(_matches(value, expected), f"{name}={value!r} must be {_describe(expected)}")
    unknown = set(cfg.keys()) - set(TOP_LEVEL) - set(GROUPS) - {"hydra"}
    for name in sorted(unknown):
        raise ConfigError(f"{name} is not a setting{_suggest(name, [*TOP_LEVEL, *GROUPS])}")
    check(cfg.num_nodes >= 1, f"num_nodes={cfg.num_nodes} must be >= 1")
    check(
        cfg.device == "cpu" or cfg.device == "cuda" or cfg.device.startswith("cuda:"),
        f"device={cfg.device} is not one of: cpu, cuda, cuda:N",
    )
    for group in GROUPS:
        check_group(group, cfg[group])


def check_group(group: str, node: DictConfig) -> None:
    """Every key of a group must be a typed parameter of its ``_target_``."""
    target: Callable[..., Any] = get_object(node._target_)
    signature = inspect.signature(target)
    hints = typing.get_type_hints(target.__init__ if inspect.isclass(target) else target)
    runtime = RUNTIME_INPUTS.get(group, frozenset()) | {"self"}
    settings = [name for name in signature.parameters if name not in runtime]
    for key, value in node.items():
        if key in ("_target_", "_partial_"):
            continue
        if key not in settings:
            raise ConfigError(
                f"{group}.{key} is not a setting of this {group}{_suggest(key, settings)}"
            )
        expected = hints.get(key)
        if expected is not None:
            plain = OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
            check(
                _matches(plain, expected), f"{group}.{key}={plain!r} must be {_describe(expected)}"
            )


def _matches(value: Any, expected: Any) -> bool:
    """Whether a plain config value fits a type hint (ints pass for floats, bools only for bool)."""
    origin = typing.get_origin(expected)
    if expected is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, option) for option in typing.get_args(expected))
    if expected is type(None) or expected is None:
        return value is None
    if isinstance(expected, tuple):
        return any(_matches(value, option) for option in expected)
    if origin is not None and issubclass(origin, Sequence):
        (item,) = typing.get_args(expected)[:1] or (Any,)
        return isinstance(value, list | tuple) and all(_matches(v, item) for v in value)
    if expected is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, expected)


def _describe(expected: Any) -> str:
    if isinstance(expected, tuple):
        return " or ".join(_describe(option) for option in expected)
    if typing.get_origin(expected) in (typing.Union, types.UnionType):
        return " or ".join(_describe(option) for option in typing.get_args(expected))
    if expected is type(None):
        return "null"
    if typing.get_origin(expected) is not None:
        (item,) = typing.get_args(expected)[:1] or (Any,)
        return f"a list of {_describe(item)}"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(
        expected, getattr(expected, "__name__", str(expected))
    )


def _suggest(name: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(name, candidates, n=1)
    hint = f"; did you mean {close[0]}?" if close else ""
    return f"{hint} (settings: {', '.join(candidates)})"
