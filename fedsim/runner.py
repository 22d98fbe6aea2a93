"""``fedsim run``: the Hydra application, and the checks made before Hydra starts any job."""

from __future__ import annotations

import difflib
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from fedsim import checkpoint, schemas  # noqa: F401  (schemas: registers what the YAMLs extend)
from fedsim.build import build_simulation
from fedsim.config import GROUPS, PRESETS, check_choice, config_dir, options, schema_error
from fedsim.errors import ConfigError, RunError, check
from fedsim.metrics.recorder import Recorder

METRICS = "metrics.parquet"
NODE_TOTALS = "node_totals.parquet"  # per node over the run: bytes sent, aggregations


def _groups_help() -> str:
    """The config groups and their options, one line each, for ``fedsim run --help``."""
    return "\n".join(f"{group}: {', '.join(options(group))}" for group in (*GROUPS, *PRESETS))


OmegaConf.register_new_resolver("fedsim_groups", _groups_help, replace=True)


def precheck(args: list[str]) -> None:
    """Compose and build every job that ``fedsim run args`` would start; raise on the first bad."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    multirun = any(arg in ("-m", "--multirun") for arg in args)
    if multirun:
        args = settings_of_swept_groups_per_job(args)  # as `fedsim run -m` hands them to Hydra
    overrides = [arg for arg in args if arg not in ("-m", "--multirun")]
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException as error:
        raise ConfigError(_one_line(error)) from None
    for override in parsed:
        check(
            override.key_or_group != "",
            f"{override.input_line}: an override needs a key (key=value)",
        )
        if override.key_or_group in (*GROUPS, *PRESETS):
            for choice in (
                override.sweep_string_iterator()
                if override.is_sweep_override()
                else [override.value()]
            ):
                check_choice(override.key_or_group, str(choice))
    if not multirun and any(override.is_sweep_override() for override in parsed):
        raise ConfigError(
            "a sweep (a,b or range(...)) needs -m: fedsim run -m " + " ".join(overrides)
        )
    # As Hydra composes: a run applies the overrides as given, each in turn (so ``k=0.5 k=0``
    # fails on the first); a sweep composes them all without the sweeps first, then each job,
    # in which a later override of a key replaces an earlier one.
    jobs = [overrides]
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3", job_name="fedsim"):
        if multirun:
            _compose([o.input_line for o in parsed if not o.is_sweep_override()])
            jobs = [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]
        for job in jobs:
            cfg = _compose(job)
            _check_output_dir(cfg, multirun)
            OmegaConf.set_struct(cfg, False)
            del cfg["hydra"]
            build_simulation(cfg)


def settings_of_swept_groups_per_job(args: list[str]) -> list[str]:
    """``-m privacy=corn,local privacy.clip=1`` as ``privacy.clip=choice(1)``.

    Hydra composes a sweep's base config with the default option of every swept group, where
    a setting of the chosen options may not exist (privacy=none has no clip); as a sweep of
    one value the setting is applied per job, after its group's option is chosen.
    """
    overrides = [arg for arg in args if arg not in ("-m", "--multirun")]
    parsed = OverridesParser.create().parse_overrides(overrides)
    swept = {o.key_or_group for o in parsed if o.is_sweep_override()}
    rewritten = {
        o.input_line: f"{o.key_or_group}=choice({o.get_value_element_as_str()})"
        for o in parsed
        if "." in o.key_or_group
        and o.key_or_group.split(".")[0] in swept
        and not (o.is_sweep_override() or o.is_delete() or o.is_add())
    }
    return [rewritten.get(arg, arg) for arg in args]


def _compose(overrides: list[str]) -> DictConfig:
    try:
        return compose("config", overrides=overrides, return_hydra_config=True)
    except (HydraException, OmegaConfBaseException) as error:
        raise ConfigError(_one_line(error, overrides)) from None


def _one_line(error: Exception, overrides: list[str] = ()) -> str:
    """Hydra's multi-line composition errors as one line, with a suggestion for unknown keys."""
    text = str(error)
    if text.startswith("Could not override '"):
        key = text.split("'")[1]
        choices = [o for o in overrides if o.split("=")[0].lstrip("+~") in GROUPS]
        known = _setting_names(compose("config", overrides=choices))
        close = difflib.get_close_matches(key, known, n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        return f"{key} is not a setting; {hint}(`fedsim list` shows every setting)"
    typed = schema_error(error)
    if typed is not None:
        return typed
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return "; ".join(lines[:3])


def _setting_names(cfg: DictConfig, prefix: str = "") -> list[str]:
    names = []
    for key, value in cfg.items():
        if str(key).startswith("_"):
            continue
        name = f"{prefix}{key}"
        names += _setting_names(value, f"{name}.") if isinstance(value, DictConfig) else [name]
    return names


def _check_output_dir(cfg: DictConfig, multirun: bool) -> None:
    """Never write over an earlier run's results; resume only a run of the same config."""
    if cfg.resume:
        check(not multirun, "resume=true continues one run: fedsim resume RUN_DIR (not -m)")
        run_dir = Path(cfg.hydra.run.dir)
        check(
            checkpoint.exists(run_dir),
            f"resume=true but hydra.run.dir={run_dir} holds no {checkpoint.CHECKPOINT}",
        )
        _check_same_config(run_dir, cfg)
        return
    if multirun:
        sweep = Path(cfg.hydra.sweep.dir)
        if sweep.exists() and any(sweep.rglob(METRICS)):
            raise ConfigError(f"hydra.sweep.dir={sweep} already holds runs; choose a new directory")
    else:
        run_dir = Path(cfg.hydra.run.dir)
        if (run_dir / METRICS).exists():
            raise ConfigError(
                f"hydra.run.dir={run_dir} already holds a run ({METRICS}); choose a new directory"
            )


def _check_same_config(run_dir: Path, cfg: DictConfig) -> None:
    saved = json.loads((run_dir / "summary.json").read_text())["config"]
    job = OmegaConf.masked_copy(cfg, [key for key in cfg if key != "hydra"])
    current = OmegaConf.to_container(job, resolve=True)
    ignored = {"resume", "progress", "checkpoint_every"}
    changed = sorted(
        k for k in set(saved) | set(current) if k not in ignored and saved.get(k) != current.get(k)
    )
    check(
        not changed,
        f"resume=true with other settings than the run in {run_dir}: {', '.join(changed)} differ",
    )


@hydra.main(config_path=str(config_dir()), config_name="config", version_base="1.3")
def hydra_main(cfg: DictConfig) -> None:
    """One job: build, run, record; config errors become one line and exit status 2."""
    try:
        run_job(cfg, Path(HydraConfig.get().runtime.output_dir))
    except ConfigError as error:
        print(f"fedsim: config error: {error}", file=sys.stderr)
        sys.exit(2)
    except RunError as error:
        print(f"fedsim: error: {error}", file=sys.stderr)
        sys.exit(1)


def run_job(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """Run the simulation described by ``cfg`` in ``run_dir``; returns the summary it writes."""
    started = time.perf_counter()
    simulation = build_simulation(cfg)
    check(
        not cfg.resume or checkpoint.exists(run_dir),
        f"resume=true but {run_dir} holds no {checkpoint.CHECKPOINT}",
    )
    resume = checkpoint.load(run_dir) if cfg.resume else None
    if resume is None and (run_dir / METRICS).exists():
        raise ConfigError(f"{run_dir} already holds a run ({METRICS}); choose a new hydra.run.dir")
    keep = None if resume is None else resume["rounds_completed"]
    recorder = Recorder(run_dir / METRICS, keep_through_round=keep)
    topology = simulation.federation.topology
    summary: dict[str, Any] = {
        "status": "running",
        "rounds_completed": 0,
        "num_parameters": simulation.task.layout.size,
        "choices": _choices(),
        "overrides": _overrides(),
        "config": OmegaConf.to_container(cfg, resolve=True),
        "topology": None if topology is None else topology.summary(),
    }
    _write_label_histograms(run_dir, simulation.label_histograms)
    _write_summary(run_dir, summary)
    simulation.timings["setup_s"] = time.perf_counter() - started
    try:
        summary["final"] = simulation.run(
            recorder,
            progress=cfg.progress,
            checkpoint=lambda state: checkpoint.save(run_dir, state),
            resume=resume,
        )
        summary["status"] = "completed" if simulation.stalled is None else "stalled"
        if simulation.stalled is not None:
            summary["stalled"] = simulation.stalled
            warnings.warn(simulation.stalled, stacklevel=1)
    except KeyboardInterrupt:
        summary["status"] = "interrupted"
        raise
    except Exception:
        summary["status"] = "failed"
        raise
    finally:
        simulation.backend.close()  # Ray actors go, also on errors and Ctrl-C
        recorder.close()
        summary["rounds_completed"] = simulation.rounds_completed
        summary["wall_time_s"] = time.perf_counter() - started
        summary["timings"] = simulation.timings
        if simulation.privacy is not None:
            summary["privacy"] = simulation.privacy.summary(simulation.rounds_completed)
        _write_summary(run_dir, summary)
        if simulation.rounds_completed:
            pq.write_table(pa.table(simulation.node_totals()), run_dir / NODE_TOTALS)
    _print_summary(run_dir, summary)
    return summary


def _write_label_histograms(run_dir: Path, histograms: np.ndarray | None) -> None:
    """Each node's examples per class as tidy rows (node, label, count): ``partition.parquet``."""
    if histograms is None:
        return
    nodes, labels = np.nonzero(histograms)
    table = pa.table({"node": nodes, "label": labels, "count": histograms[nodes, labels]})
    pq.write_table(table, run_dir / "partition.parquet")


def _choices() -> dict[str, str]:
    choices = HydraConfig.get().runtime.choices if HydraConfig.initialized() else {}
    return {group: choices[group] for group in (*GROUPS, *PRESETS) if choices.get(group)}


def _overrides() -> list[str]:
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def _write_summary(run_dir: Path, summary: dict[str, Any]) -> None:
    temporary = run_dir / ".summary.json.tmp"
    temporary.write_text(json.dumps(summary, indent=2, default=float))
    temporary.rename(run_dir / "summary.json")


def _print_summary(run_dir: Path, summary: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"fedsim run: {' '.join(summary['overrides']) or 'defaults'}")
    table.add_column("metric")
    table.add_column("final", justify="right")
    for name, value in summary["final"].items():
        table.add_row(name, f"{value:,.4g}" if abs(value) < 1e6 else f"{value:,.0f}")
    table.add_row("rounds", str(summary["rounds_completed"]))
    console = Console()
    console.print(table)
    console.print(f"results in {run_dir}")
