"""Structured-config schemas registered with Hydra: the run's settings and one per ``_target_``.

Each group option's YAML extends the schema of its target (``defaults: [/schema/GROUP/NAME@_here_,
_self_]``), a dataclass made from the target's signature: its settings, their types and
defaults. Hydra then rejects a key the target does not take, or a value of the wrong type,
while it composes, before fedsim builds anything. Importing this module stores them in Hydra's
ConfigStore, each made when Hydra first loads it; the dataclasses are module attributes, so
that a pickled config, e.g. one sent to a Ray worker, loads anywhere.
"""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

import yaml
from hydra.core.config_store import ConfigNode, ConfigStore
from omegaconf import MISSING, OmegaConf

from fedsim.config import (
    GROUPS,
    RUNTIME_INPUTS,
    RUNTIME_SETTINGS,
    RunConfig,
    config_dir,
    options,
    target_of,
)

PLAIN = (int, float, bool, str)


def option_type(hint: Any) -> Any:
    """The closest type OmegaConf can hold for a target's type hint; ``Any`` when none is."""
    if hint in PLAIN:
        return hint
    if hint is Path:
        return str  # a path is typed as text in YAML; the target makes it a Path
    args = [arg for arg in typing.get_args(hint) if arg is not type(None)]
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        typed = {option_type(arg) for arg in args}
        if len(typed) != 1 or Any in typed:
            return Any
        (single,) = typed
        return Optional[single] if type(None) in typing.get_args(hint) else single  # noqa: UP045
    origin = typing.get_origin(hint)
    if origin is typing.Literal:
        kinds = {type(arg) for arg in typing.get_args(hint)}
        return kinds.pop() if len(kinds) == 1 and kinds <= set(PLAIN) else Any
    if origin is not None and isinstance(origin, type) and issubclass(origin, Sequence):
        if origin is str or (origin is tuple and args[-1:] != [Ellipsis] and len(set(args)) > 1):
            return Any
        item = option_type(args[0]) if args else Any
        return list[item] if item in PLAIN else list[Any]
    return Any


def schema(group: str, target_name: str) -> type:
    """The dataclass of a target's settings: every parameter but those fedsim passes at run time."""
    target, signature, hints = target_of(group, target_name)
    runtime = RUNTIME_INPUTS.get(group, frozenset()) | {"self"}
    fields: list[tuple[str, Any, Any]] = [
        ("_target_", str, dataclasses.field(default=target_name)),
        ("_partial_", bool, dataclasses.field(default=group in RUNTIME_INPUTS)),
    ]
    for name, parameter in signature.parameters.items():
        if name in runtime:
            continue
        if parameter.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            raise TypeError(f"{target_name} takes *{name}: a schema needs named settings")
        fields.append((name, option_type(hints.get(name, Any)), _default(parameter.default)))
    for name, hint in RUNTIME_SETTINGS.get(group, {}).items():
        fields.append((name, option_type(hint), dataclasses.field(default=None)))
    made = dataclasses.make_dataclass(class_name(group, target_name), fields)
    made.__module__ = __name__
    made.__doc__ = f"Settings of {group} target {target_name}."
    return made


def _default(value: Any) -> Any:
    """A parameter's default as a dataclass field: MISSING (required) when it has none."""
    if value is inspect.Parameter.empty:
        return dataclasses.field(default=MISSING)
    if isinstance(value, tuple | list):
        return dataclasses.field(default_factory=lambda: list(value))
    if isinstance(value, Path):
        return dataclasses.field(default=str(value))
    if not isinstance(value, (*PLAIN, type(None))):
        raise TypeError(f"default {value!r} has no YAML form: give the parameter a plain default")
    return dataclasses.field(default=value)


def schema_path(group: str, target_name: str) -> str:
    """The ConfigStore path of a target's schema, as a YAML's defaults list names it."""
    return f"/schema/{group}/{target_name.rsplit('.', 1)[1]}"


def targets(group: str) -> list[str]:
    """The ``_target_`` names of a group's YAML options."""
    files = (config_dir() / group / f"{option}.yaml" for option in options(group))
    return sorted({yaml.load(path.read_text(), Loader=_LOADER)["_target_"] for path in files})


# libyaml's parser where PyYAML was built with it: ten times the pure-Python one, which made
# reading every option's YAML here a good part of a run's start-up.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def class_name(group: str, target_name: str) -> str:
    """The name of a target's schema: ``StrategyFedAvg`` for strategy's ``...FedAvg``."""
    return _camel(group) + _camel(target_name.rsplit(".", 1)[1])


def _camel(name: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in name.split("_"))


class _Schemas(dict):
    """A group's schemas in Hydra's ConfigStore, by file name, each made when Hydra first
    loads it: a run makes the few its options extend, not all of them (the targets' imports
    and ``OmegaConf.structured`` of every schema were a second of every run's start)."""

    def __init__(self, group: str) -> None:
        self.group = group
        self.targets = {f"{target.rsplit('.', 1)[1]}.yaml": target for target in targets(group)}
        super().__init__(dict.fromkeys(self.targets))

    def __getitem__(self, name: str) -> ConfigNode:
        node = super().__getitem__(name)
        if node is None:
            made = _made(self.group, self.targets[name])
            node = ConfigNode(name, OmegaConf.structured(made), f"schema/{self.group}", None, None)
            super().__setitem__(name, node)
        return node


def _made(group: str, target_name: str) -> type:
    """The module's one schema of a target, made on first use."""
    name = class_name(group, target_name)
    if name not in globals():
        globals()[name] = schema(group, target_name)
    return globals()[name]


def __getattr__(name: str) -> type:
    """A schema by its class name, made on first use: how a pickled config finds its types."""
    for group in GROUPS:
        for target_name in targets(group):
            if class_name(group, target_name) == name:
                return _made(group, target_name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _register() -> None:
    store = ConfigStore.instance()
    store.store(group="schema", name="run", node=RunConfig)
    for group in GROUPS:
        store.repo["schema"][group] = _Schemas(group)


_register()
