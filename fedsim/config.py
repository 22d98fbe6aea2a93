"""Checks of a composed config before anything is built: names, types and top-level values.

Every problem becomes one :class:`~fedsim.errors.ConfigError` line naming the setting, the
value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import math
import re
import types
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from hydra._internal.utils import _locate
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import ConfigTypeError, OmegaConfBaseException, ValidationError

from fedsim.errors import ConfigError, check

GROUPS = (
    "strategy",
    "topology",
    "mixing",
    "data",
    "partition",
    "model",
    "optimizer",
    "lr_schedule",
    "backend",
    "aggregator",
    "network",
    "churn",
    "privacy",
    "attack",
    "compression",
    "budget",
    "logger",
)
PRESETS = ("experiment",)  # groups of @package _global_ presets: chosen, never a config key
# Arguments that the engine passes at run time, never settings of a config file.
RUNTIME_INPUTS: dict[str, frozenset[str]] = {
    "topology": frozenset({"num_nodes", "seed"}),
    "mixing": frozenset({"graph"}),
    "partition": frozenset({"labels", "num_nodes", "seed", "owners", "components"}),
    "model": frozenset({"input_shape", "num_classes"}),
    "network": frozenset({"num_nodes", "seed"}),
    "churn": frozenset({"num_nodes", "seed"}),
}
OPTIONAL_INPUTS = frozenset({"owners", "components"})  # passed only to targets that declare them
# Run-time inputs that a group's config may set instead, with their types (None: fedsim's own
# value): ``partition.seed`` holds the partition fixed while the run's ``seed`` varies.
RUNTIME_SETTINGS: dict[str, dict[str, Any]] = {"partition": {"seed": int | None}}
TOP_LEVEL: dict[str, type] = {
    "num_nodes": int,
    "rounds": int,
    "max_sim_time_s": float | None,
    "seed": int,
    "device": str,
    "eval_every": int,
    "eval_nodes": int,
    "evaluate": str,
    "header_bytes": int,
    "progress": bool,
    "init": str,
    "init_scheme": str,
    "checkpoint_every": int,
    "resume": bool,
    "on_divergence": str,
}
# The schema of the top level, registered with Hydra by fedsim.schemas; configs/config.yaml
# gives the values.
RunConfig = dataclasses.make_dataclass(
    "RunConfig",
    [(name, kind, MISSING) for name, kind in TOP_LEVEL.items()]
    + [(group, Any, MISSING) for group in GROUPS],
)
RunConfig.__module__ = __name__  # importable by name: a pickled config loads anywhere
RunConfig.__doc__ = "Settings of a run: the top level, and one node per config group."
UNLIMITED = frozenset({"network.upload_mbps", "network.download_mbps"})  # inf: no limit
INT64 = 1 << 63  # integer settings reach numpy and torch, which hold at most 64 bits
DEVICE = re.compile(r"cpu|cuda(:[0-9]+)?")


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
    _check_resolves(cfg)
    # The run's schema (RunConfig) types every top-level setting as Hydra composes, and
    # interpolations as they resolve (above); left to check: a setting deleted (~name) or
    # set to ??? is missing, and integers beyond 64 bits.
    for name, expected in TOP_LEVEL.items():
        check(
            name in cfg and not OmegaConf.is_missing(cfg, name),
            f"{name} is missing; it must be {_describe(expected)}",
        )
        _check_range(name, cfg.get(name))
    unknown = set(cfg.keys()) - set(TOP_LEVEL) - set(GROUPS) - {"hydra"}
    for name in sorted(unknown):
        raise ConfigError(f"{name} is not a setting{_suggest(name, [*TOP_LEVEL, *GROUPS])}")
    check(cfg.num_nodes >= 1, f"num_nodes={cfg.num_nodes} must be >= 1")
    check(cfg.seed >= 0, f"seed={cfg.seed} must be >= 0")
    check(
        DEVICE.fullmatch(cfg.device) is not None,
        f"device={cfg.device} is not one of: cpu, cuda, cuda:N",
    )
    from fedsim.models.init import SCHEMES  # imports torch: only when a run is checked

    check(
        cfg.init_scheme in SCHEMES,
        f"init_scheme={cfg.init_scheme} is not one of: {', '.join(SCHEMES)}",
    )
    for group in GROUPS:
        node = cfg.get(group)
        check(
            isinstance(node, DictConfig),
            f"{group} is missing; choose one of: {', '.join(options(group))} ({group}=OPTION)",
        )
        check_group(group, node)


def check_group(group: str, node: DictConfig) -> None:
    """Every key of a group must be a typed parameter of its ``_target_``."""
    _, signature, hints = target_of(group, node.get("_target_"))
    runtime = RUNTIME_INPUTS.get(group, frozenset()) | {"self"}
    _check_partial(group, node)
    _check_parameters(group, node, signature, runtime)
    settings = [name for name in signature.parameters if name not in runtime]
    settings += list(RUNTIME_SETTINGS.get(group, {}))
    hints = {**hints, **RUNTIME_SETTINGS.get(group, {})}
    for key in node:
        if key in ("_target_", "_partial_"):
            continue
        if key not in settings:
            raise ConfigError(
                f"{group}.{key} is not a setting of this {group}{_suggest(key, settings)}"
            )
        check(not OmegaConf.is_missing(node, key), f"{group}.{key} is ??? (required): set it")
        value = node[key]
        plain = OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
        expected = hints.get(key)
        if expected is not None:
            check(
                _matches(plain, expected), f"{group}.{key}={plain!r} must be {_describe(expected)}"
            )
        _check_range(f"{group}.{key}", plain)


def target_of(group: str, name: Any) -> tuple[Callable[..., Any], inspect.Signature, dict]:
    """A group's ``_target_``, its signature and its type hints; a ConfigError if unusable."""
    check(
        isinstance(name, str) and name != "",
        f"{group}._target_={name!r} must name a class or function (e.g. one from {group}=OPTION)",
    )
    try:
        target: Callable[..., Any] = _locate(name)  # hydra's get_object, without its log line
        signature = inspect.signature(target)
        settings = set(signature.parameters) - RUNTIME_INPUTS.get(group, frozenset())
        hints = _hints(target.__init__ if inspect.isclass(target) else target, settings)
    except Exception as error:  # any import or introspection failure of a user-given name
        reason = " ".join(str(error).split()) or type(error).__name__
        raise ConfigError(f"{group}._target_={name} cannot be used: {reason}") from None
    return target, signature, hints


def _hints(function: Callable[..., Any], names: set[str]) -> dict[str, Any]:
    """The type hints of ``function``'s parameters ``names``, as ``typing.get_type_hints`` gives
    them; those of the run-time inputs are left unread, so that their types (a topology, a
    sparse matrix) need not be imported to check a config."""
    annotations = inspect.get_annotations(function)
    namespace = getattr(inspect.unwrap(function), "__globals__", {})
    return {
        name: eval(hint, namespace) if isinstance(hint, str) else hint  # noqa: S307
        for name, hint in annotations.items()
        if name in names
    }


def schema_error(error: BaseException) -> str | None:
    """A schema's rejection of a value while Hydra composes, as one line naming the setting, the
    value and the type the schema asks for; None for other errors."""
    cause: BaseException | None = error
    while cause is not None and not isinstance(cause, ValidationError | ConfigTypeError):
        cause = cause.__cause__ or cause.__context__
    if cause is None or not getattr(cause, "full_key", None):
        return None
    if isinstance(cause, ConfigTypeError):
        return f"~{cause.full_key}: a setting cannot be deleted; set {cause.full_key}=VALUE instead"
    expected: Any = None
    owner, key = cause.object_type, cause.key
    if dataclasses.is_dataclass(owner) and isinstance(key, str):
        expected = {field.name: field.type for field in dataclasses.fields(owner)}.get(key)
    elif typing.get_args(cause.ref_type):
        expected = typing.get_args(cause.ref_type)[0]  # an item of a typed list
    if expected is None:
        return f"{cause.full_key}={cause.value!r} is not allowed: {cause.msg.splitlines()[0]}"
    return f"{cause.full_key}={cause.value!r} must be {_describe(expected)}"


def _check_partial(group: str, node: DictConfig) -> None:
    """``_partial_`` is true exactly for the groups whose targets fedsim calls with run-time
    inputs."""
    partial, needed = node.get("_partial_", False), group in RUNTIME_INPUTS
    shown = str(partial).lower() if isinstance(partial, bool) else repr(partial)
    reason = (
        f"fedsim passes {', '.join(sorted(RUNTIME_INPUTS[group]))} when it runs"
        if needed
        else f"fedsim builds the {group} itself"
    )
    check(partial is needed, f"{group}._partial_={shown} must be {str(needed).lower()}: {reason}")


def _check_parameters(
    group: str, node: DictConfig, signature: inspect.Signature, runtime: frozenset[str]
) -> None:
    """The target takes what fedsim passes it, and the config sets what it has no default for."""
    parameters = signature.parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    passed = sorted(RUNTIME_INPUTS.get(group, frozenset()) - OPTIONAL_INPUTS - set(parameters))
    check(
        takes_any or not passed,
        f"{group}._target_={node._target_} does not take {', '.join(passed)}, "
        f"which fedsim passes to every {group}",
    )
    unset = [
        name
        for name, parameter in parameters.items()
        if parameter.default is inspect.Parameter.empty
        and parameter.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
        and name not in runtime
        and (name not in node or OmegaConf.is_missing(node, name))
    ]
    check(
        not unset,
        f"{group} needs {', '.join(f'{group}.{name}' for name in unset)}: "
        f"{group}._target_={node._target_} has no default for it",
    )


def _check_resolves(cfg: DictConfig) -> None:
    """Every ``${...}`` interpolation must resolve."""
    try:
        OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as error:
        key = getattr(error, "full_key", None) or "an interpolation"
        reason = (getattr(error, "msg", None) or str(error)).splitlines()[0]
        raise ConfigError(f"{key} cannot be resolved: {reason}") from None


def _check_range(name: str, value: Any) -> None:
    """Integers, also inside lists, must fit in 64 bits; numbers must be finite, but for
    the few settings where ``inf`` means unlimited (:data:`UNLIMITED`)."""
    values = value if isinstance(value, list | tuple) else [value]
    for item in values:
        if isinstance(item, int) and not isinstance(item, bool):
            check(
                -INT64 <= item < INT64,
                f"{name}={value!r} is out of range: integers must lie in [-2^63, 2^63)",
            )
        if isinstance(item, float) and not math.isfinite(item):
            check(
                name in UNLIMITED and item == math.inf,
                f"{name}={value!r} must be a finite number"
                + (" (or inf: unlimited)" if name in UNLIMITED else ""),
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
    if origin is typing.Literal:
        return value in typing.get_args(expected)
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
    if typing.get_origin(expected) is typing.Literal:
        return "one of: " + ", ".join(str(option) for option in typing.get_args(expected))
    if typing.get_origin(expected) is not None:
        (item,) = typing.get_args(expected)[:1] or (Any,)
        plural = {int: "integers", float: "numbers", bool: "true/false values", str: "strings"}
        return f"a list of {plural.get(item, 'values')}"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(
        expected, getattr(expected, "__name__", str(expected))
    )


def _suggest(name: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(name, candidates, n=1)
    hint = f"; did you mean {close[0]}?" if close else ""
    return f"{hint} (settings: {', '.join(candidates)})" if candidates else " (it has no settings)"
