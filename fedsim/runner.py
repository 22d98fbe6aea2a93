"""``fedsim run``: the Hydra application, and the checks made before Hydra starts any job."""

from __future__ import annotations

import copy
import difflib
import fcntl
import json
import shutil
import sys
import time
import warnings
from pathlib import Path
from typing import IO, Any

import hydra
import numpy as np
import pyarrow.parquet as pq
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from rich.console import Console
from rich.table import Column, Table

from fedsim import checkpoint, schemas  # noqa: F401  (schemas: registers what the YAMLs extend)
from fedsim.budget import mixed_units_warning
from fedsim.build import build_simulation
from fedsim.config import GROUPS, PRESETS, check_choice, config_dir, options, schema_error
from fedsim.errors import ConfigError, RunError, check
from fedsim.metrics import arrow
from fedsim.metrics.recorder import Recorder

METRICS = "metrics.parquet"
NODE_TOTALS = "node_totals.parquet"  # per node over the run: bytes sent, aggregations
SUMMARY = "summary.json"
PARTITION = "partition.parquet"
# Any of these makes a directory a run's: a new run never writes into it.
ARTEFACTS = (METRICS, SUMMARY, checkpoint.CHECKPOINT, NODE_TOTALS, PARTITION)
LOCK = ".fedsim.lock"
# Settings a resumed run may change: they do not change its results.
RESUMABLE = ("resume", "progress", "checkpoint_every", "logger")
# A resumed run may run on to more rounds (fedsim resume RUN rounds=N) or a larger budget.
EXTENDABLE = ("rounds", "budget", "max_sim_time_s")
# Counters of some protocols only: left out of the printed summary while zero.
COUNTERS = ("bytes_", "aggregations_", "updates_", "staleness_")


def _groups_help() -> str:
    """The config groups and their options, one line each, for ``fedsim run --help``."""
    return "\n".join(f"{group}: {', '.join(options(group))}" for group in (*GROUPS, *PRESETS))


OmegaConf.register_new_resolver("fedsim_groups", _groups_help, replace=True)


def precheck(args: list[str]) -> tuple[Path, bool]:
    """Compose and build every job that ``fedsim run args`` would start; raise on the first bad.

    Returns the directory the run (or the sweep) will write, ``now`` resolved, and whether
    the run resumes the one in it.
    """
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
    units = []  # per job: its strategy, the strategy's round unit, its budget
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3", job_name="fedsim"):
        if multirun:
            sweep = _compose([o.input_line for o in parsed if not o.is_sweep_override()])
            jobs = [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]
        for job in jobs:
            cfg = _compose(job)
            _check_output_dir(cfg, multirun)
            directory = Path(sweep.hydra.sweep.dir if multirun else cfg.hydra.run.dir)
            strategy = cfg.hydra.runtime.choices.get("strategy") or str(cfg.strategy._target_)
            composed = None if multirun else copy.deepcopy(cfg)
            OmegaConf.set_struct(cfg, False)
            del cfg["hydra"]
            simulation = build_simulation(cfg)
            units.append((strategy, simulation.strategy.round_unit, simulation.budget))
            if cfg.resume:
                resumed = checkpoint.load(directory, job_config(cfg), EXTENDABLE)
                simulation.check_resumable(resumed)
    _prebuilt.clear()
    _composed.clear()
    if not multirun:
        launched = (*overrides, f"hydra.run.dir={directory}")  # as fedsim run launches it
        _composed[launched] = (composed, str(directory))  # Hydra runs it, not composed twice
        if (key := _settings_key(cfg)) is not None:
            _prebuilt[key] = simulation  # the job takes it, not built twice
    if (warning := mixed_units_warning(units)) is not None:
        print(f"fedsim: warning: {warning}", file=sys.stderr)
    return directory, bool(cfg.resume)


def claim(directory: Path, multirun: bool = False, resuming: bool = False) -> IO[str]:
    """Take ``directory`` for this process before Hydra writes anything into it.

    An exclusive ``flock`` on its lock file, held until the returned handle is closed or the
    process ends (also when killed): a second run into the same directory is refused, and
    so is a new run into a directory that got a run's files since it was checked.
    """
    setting = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    directory.mkdir(parents=True, exist_ok=True)
    handle = (directory / LOCK).open("a")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise ConfigError(
            f"{setting}={directory} is in use by another fedsim run; choose a new directory"
        ) from None
    try:
        if not resuming:
            _check_free(directory, multirun)
    except ConfigError:
        handle.close()
        raise
    return handle


def job_config(cfg: DictConfig) -> dict[str, Any]:
    """A job's settings that a resumed run must share with the run it continues."""
    job = OmegaConf.masked_copy(cfg, [key for key in cfg if key not in ("hydra", *RESUMABLE)])
    return OmegaConf.to_container(job, resolve=True)


def artefact(directory: Path, sweep: bool = False) -> Path | None:
    """The first file in ``directory`` (in its job directories, for a sweep) that a run
    writes, or None: such a directory is taken."""
    for name in ARTEFACTS:
        found = next(directory.rglob(name), None) if sweep else directory / name
        if found is not None and found.exists():
            return found
    return None


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
        close = _close_settings(key, _setting_names(compose("config", overrides=choices)))
        hint = f"did you mean {' or '.join(close)}? " if close else ""
        return f"{key} is not a setting; {hint}(`fedsim list` shows every setting)"
    typed = schema_error(error)
    if typed is not None:
        return typed
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return "; ".join(lines[:3])


def _close_settings(key: str, known: list[str]) -> list[str]:
    """The settings ``key`` may have meant: those of its name in any group (``strategy.lr``:
    ``optimizer.lr``), else the closest spelling."""
    leaf = key.rsplit(".", 1)[-1]
    same_name = [name for name in known if name.rsplit(".", 1)[-1] == leaf]
    return same_name[:3] or difflib.get_close_matches(key, known, n=1)


def _setting_names(cfg: DictConfig, prefix: str = "") -> list[str]:
    names = []
    for key, value in cfg.items():
        if str(key).startswith("_"):
            continue
        name = f"{prefix}{key}"
        names += _setting_names(value, f"{name}.") if isinstance(value, DictConfig) else [name]
    return names


def _check_output_dir(cfg: DictConfig, multirun: bool) -> None:
    """Never write over an earlier run's results; resume only a run with a checkpoint."""
    if cfg.resume:
        check(not multirun, "resume=true continues one run: fedsim resume RUN_DIR (not -m)")
        run_dir = Path(cfg.hydra.run.dir)
        check(
            checkpoint.exists(run_dir),
            f"resume=true but hydra.run.dir={run_dir} holds no {checkpoint.CHECKPOINT}",
        )
        return
    _check_free(Path(cfg.hydra.sweep.dir if multirun else cfg.hydra.run.dir), multirun)


def _check_free(directory: Path, multirun: bool) -> None:
    found = artefact(directory, sweep=multirun)
    if found is not None:
        setting = "hydra.sweep.dir" if multirun else "hydra.run.dir"
        raise ConfigError(
            f"{setting}={directory} already holds a run ({found.relative_to(directory)}); "
            "choose a new directory"
        )


# The single run that precheck built, by its settings: the job runs it rather than build it
# again (a build reads and partitions the data, and may solve a privacy mechanism's program).
_prebuilt: dict[str, Any] = {}


def _settings_key(cfg: DictConfig) -> str | None:
    """A job's settings, resolved, as text; None where they resolve only inside a Hydra job."""
    try:
        return json.dumps(OmegaConf.to_container(cfg, resolve=True), sort_keys=True, default=str)
    except OmegaConfBaseException:
        return None


def launch(overrides: list[str], multirun: bool) -> None:
    """Run the checked overrides' job (or sweep) as ``@hydra.main`` would, less the config it
    composes only to read ``hydra.mode``, which fedsim's configs never set; a single run takes
    the config that ``precheck`` composed for it, with the directory it claimed."""
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import _run_app, create_automatic_config_search_path, run_and_report
    from hydra.core.global_hydra import GlobalHydra

    search_path = create_automatic_config_search_path(None, None, str(config_dir()))
    hydra_ = run_and_report(
        lambda: Hydra.create_main_hydra2(task_name="fedsim", config_search_path=search_path)
    )
    composed = None if multirun else _composed.pop(tuple(overrides), None)
    try:
        if composed is not None:
            run_and_report(lambda: _run_composed(hydra_, *composed))
            return
        _run_app(
            run=not multirun,
            multirun=multirun,
            mode=None,
            hydra=hydra_,
            config_name="config",
            task_function=job,
            overrides=list(overrides),
        )
    finally:
        GlobalHydra.instance().clear()


# The single run that precheck composed and the directory it claimed, by the overrides it is
# launched with.
_composed: dict[tuple[str, ...], tuple[DictConfig, str]] = {}


def _run_composed(hydra_: Any, cfg: DictConfig, directory: str) -> None:
    """``Hydra.run`` of a config composed without the two overrides it is launched with: the
    run's directory, and the run mode that ``_run_app`` sets."""
    from hydra._internal.callbacks import Callbacks
    from hydra.core.utils import configure_log
    from hydra.core.utils import run_job as run_hydra_job
    from hydra.types import HydraContext

    cfg.hydra.run.dir = directory
    cfg.hydra.overrides.hydra.extend([f"hydra.run.dir={directory}", "hydra.mode=RUN"])
    cfg.hydra.mode = RunMode.RUN
    configure_log(cfg.hydra.hydra_logging, cfg.hydra.verbose)
    callbacks = Callbacks(cfg)
    callbacks.on_run_start(config=cfg, config_name="config")
    context = HydraContext(config_loader=hydra_.config_loader, callbacks=callbacks)
    ret = run_hydra_job(job, cfg, "hydra.run.dir", None, context)
    callbacks.on_run_end(config=cfg, config_name="config", job_return=ret)
    _ = ret.return_value  # the job's exception, raised


def job(cfg: DictConfig) -> None:
    """One job: build, run, record; config errors become one line and exit status 2."""
    try:
        run_job(cfg, Path(HydraConfig.get().runtime.output_dir))
    except ConfigError as error:
        print(f"fedsim: config error: {error}", file=sys.stderr)
        sys.exit(2)
    except RunError as error:
        print(f"fedsim: error: {error}", file=sys.stderr)
        sys.exit(1)


# Hydra's own command line, for what fedsim passes on to it (--help, --cfg job, --info).
hydra_main = hydra.main(config_path=str(config_dir()), config_name="config", version_base="1.3")(
    job
)


def run_job(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """Run the simulation described by ``cfg`` in ``run_dir``; returns the summary it writes.

    Nothing is written before the checkpoint to resume from (if any) is known to be this
    run's; a full disk ends the run in one line, its last checkpoint kept.
    """
    started = time.perf_counter()
    key = _settings_key(cfg)
    simulation = _prebuilt.pop(key) if key in _prebuilt else build_simulation(cfg)
    config = job_config(cfg)
    resume = checkpoint.load(run_dir, config, EXTENDABLE) if cfg.resume else None
    if resume is None:
        found = artefact(run_dir)
        check(found is None, f"{run_dir} already holds a run ({found}); choose a new hydra.run.dir")
    else:
        simulation.check_resumable(resume)
    try:
        keep = None if resume is None else resume["rounds_completed"]
        recorder = Recorder(run_dir / METRICS, keep_through_round=keep)
    except ValueError as error:  # a resumed run's metrics that do not read
        raise RunError(f"cannot resume {run_dir}: {error}") from None
    except OSError as error:
        raise RunError(f"cannot write {run_dir}: {checkpoint.disk_error(error)}") from None
    summary: dict[str, Any] = {"status": "running"}
    try:
        topology = simulation.federation.topology
        summary.update(
            rounds_completed=0,
            num_parameters=simulation.task.layout.size,
            choices=_choices(),
            overrides=_overrides(),
            config=OmegaConf.to_container(cfg, resolve=True),
            topology=None if topology is None else topology.summary(),
        )
        _write_label_histograms(run_dir, simulation.label_histograms)
        _write_summary(run_dir, summary)
        simulation.timings["setup_s"] = time.perf_counter() - started
        try:
            summary["final"] = simulation.run(
                recorder,
                progress=cfg.progress and not _sweep_job(),  # a job's line is its progress
                checkpoint=lambda state: checkpoint.save(run_dir, {**state, "config": config}),
                resume=resume,
            )
        finally:
            simulation.backend.close()  # Ray actors go, also on errors and Ctrl-C
            recorder.close()
        summary["status"] = _ending(simulation, summary)
    except KeyboardInterrupt:
        summary["status"] = "interrupted"
        raise
    except OSError as error:
        summary["status"] = f"failed: {checkpoint.disk_error(error)}"
        raise RunError(
            f"cannot write {error.filename or run_dir}: {checkpoint.disk_error(error)}; "
            f"the metrics recorded so far and the last checkpoint are kept "
            f"(fedsim resume {run_dir})"
        ) from None
    except Exception:
        summary["status"] = "failed"
        raise
    finally:
        summary["wall_time_s"] = time.perf_counter() - started
        _finish_summary(run_dir, summary, simulation)
    _print_summary(run_dir, summary)
    return summary


def _ending(simulation: Any, summary: dict[str, Any]) -> str:
    """``completed``, or ``stalled`` / ``diverged`` with the reason in ``summary``."""
    for status in ("stalled", "diverged"):
        reason = getattr(simulation, status)
        if reason is not None:
            summary[status] = reason
            warnings.warn(f"{status}: {reason}", stacklevel=1)
    if simulation.stalled is not None:
        return "stalled"
    return "completed" if simulation.diverged is None else "diverged"


def _finish_summary(run_dir: Path, summary: dict[str, Any], simulation: Any) -> None:
    """The summary's last word on the run, written even when the disk is full (or said so)."""
    summary["rounds_completed"] = simulation.rounds_completed
    summary["round_unit"] = simulation.strategy.round_unit
    summary["stopped_by"] = simulation.stopped_by  # the budget spent (rounds: all of them)
    summary["timings"] = simulation.timings
    if simulation.privacy is not None:
        summary["privacy"] = simulation.privacy.summary(simulation.rounds_completed)
    byzantine = simulation.messages.byzantine_nodes()
    if len(byzantine):  # left out of every metric
        summary["attackers"] = byzantine.tolist()
    try:
        _write_summary(run_dir, summary)
        if simulation.rounds_completed:
            pq.write_table(arrow.table(simulation.node_totals()), run_dir / NODE_TOTALS)
    except OSError as error:
        if not _overwrite_summary(run_dir, summary):
            print(
                f"fedsim: cannot update {run_dir / SUMMARY}: {checkpoint.disk_error(error)}",
                file=sys.stderr,
            )


def _overwrite_summary(run_dir: Path, summary: dict[str, Any]) -> bool:
    """On a full disk: the summary, compact, written over the old one in the space it holds."""
    path = run_dir / SUMMARY
    text = json.dumps(summary, separators=(",", ":"), default=float).encode()
    if not path.is_file() or len(text) > path.stat().st_size:
        return False
    try:
        with path.open("r+b") as handle:
            handle.write(text)
            handle.truncate()
    except OSError:
        return False
    return True


def _write_label_histograms(run_dir: Path, histograms: np.ndarray | None) -> None:
    """Each node's examples per class as tidy rows (node, label, count): ``partition.parquet``."""
    if histograms is None:
        return
    nodes, labels = np.nonzero(histograms)
    table = arrow.table({"node": nodes, "label": labels, "count": histograms[nodes, labels]})
    pq.write_table(table, run_dir / PARTITION)


def _choices() -> dict[str, str]:
    choices = HydraConfig.get().runtime.choices if HydraConfig.initialized() else {}
    return {group: choices[group] for group in (*GROUPS, *PRESETS) if choices.get(group)}


def _overrides() -> list[str]:
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def _write_summary(run_dir: Path, summary: dict[str, Any]) -> None:
    temporary = run_dir / f".{SUMMARY}.tmp"
    try:
        temporary.write_text(json.dumps(summary, indent=2, default=float))
        temporary.rename(run_dir / SUMMARY)
    finally:
        temporary.unlink(missing_ok=True)


def _print_summary(run_dir: Path, summary: dict[str, Any]) -> None:
    """The run's final metrics as a table that fits the terminal; a sweep's job: one line."""
    console = _console()
    if _sweep_job():
        console.print(job_line(summary), markup=False, highlight=False, no_wrap=True)
        return
    title = f"fedsim run: {' '.join(summary['overrides']) or 'defaults'}"
    console.print(title, markup=False, highlight=False)
    table = Table("metric", Column("final", justify="right"))
    for name, value in printed_metrics(summary["final"]).items():
        table.add_row(name, number(value))
    table.add_row("rounds", number(summary["rounds_completed"]))
    console.print(table)
    console.print(f"results in {run_dir}", markup=False, highlight=False)


def printed_metrics(final: dict[str, float]) -> dict[str, float]:
    """The metrics worth printing: all but counters that stayed zero, which belong to other
    protocols (control bytes, device-to-device bytes, aggregations of a FedAvg run)."""
    return {name: v for name, v in final.items() if not (name.startswith(COUNTERS) and v == 0)}


def number(value: float) -> str:
    """One format for every printed number: whole numbers and those from 1,000 up with
    thousands separators and no decimals, the others to 4 significant digits."""
    if not np.isfinite(value):
        return str(value)
    if float(value).is_integer() or abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.4g}"


def print_sweep(directory: Path) -> None:
    """One table of a sweep's jobs: the settings that differ, status, rounds, accuracy, time."""
    jobs = []
    for path in directory.rglob(SUMMARY):
        try:
            jobs.append((path.parent.relative_to(directory), json.loads(path.read_text())))
        except (OSError, ValueError):
            continue  # a job that failed before writing its summary, or mid-write
    if not jobs:
        return
    jobs.sort(key=lambda job: [int(p) if p.isdigit() else p for p in job[0].parts])
    shared = set.intersection(*(set(summary.get("overrides", [])) for _, summary in jobs))
    table = Table(
        "job", "settings", "status", Column("rounds", justify="right"),
        Column("accuracy", justify="right"), Column("time (s)", justify="right"),
        title=f"fedsim sweep: {len(jobs)} jobs in {directory}",
    )  # fmt: skip
    for job, summary in jobs:
        accuracy = summary.get("final", {}).get("accuracy")
        table.add_row(
            str(job),
            " ".join(o for o in summary.get("overrides", []) if o not in shared),
            str(summary.get("status", "")),
            number(summary.get("rounds_completed", 0)),
            "" if accuracy is None else number(accuracy),
            number(round(summary.get("wall_time_s", 0.0), 1)),
        )
    _console().print(table)


def sweep_settings(args: list[str]) -> list[str]:
    """Hydra settings for ``fedsim run -m args``: each job names only the swept settings in
    its line (``hydra.job.config.override_dirname.exclude_keys`` holds the others), and the
    basic launcher's lines, which would repeat them, are left out (another launcher's are
    kept: they may say more, e.g. where its jobs run)."""
    overrides = [arg for arg in args if arg not in ("-m", "--multirun")]
    parsed = OverridesParser.create().parse_overrides(overrides)
    fixed = [o.key_or_group for o in parsed if not o.is_sweep_override()]
    extra = [f"hydra.job.config.override_dirname.exclude_keys=[{','.join(fixed)}]"]
    if not any(o.key_or_group in ("hydra/hydra_logging", "hydra/launcher") for o in parsed):
        extra.append("hydra/hydra_logging=disabled")
    return extra


def _sweep_job() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def job_line(summary: dict[str, Any]) -> str:
    """``job 3  strategy=dpsgd seed=1  accuracy 0.8123  12.3 s`` (and the status if not
    completed)."""
    hydra_config = HydraConfig.get()
    fixed = set(hydra_config.job.config.override_dirname.exclude_keys)
    swept = [o for o in summary["overrides"] if o.split("=")[0].lstrip("+~") not in fixed]
    accuracy = summary.get("final", {}).get("accuracy")
    parts = [f"job {hydra_config.job.num}", " ".join(swept) or "defaults"]
    if summary["status"] != "completed":
        parts.append(str(summary["status"]))
    if accuracy is not None:
        parts.append(f"accuracy {number(accuracy)}")
    parts.append(f"{summary['wall_time_s']:.1f} s")
    return "  ".join(parts)


def _console() -> Console:
    """A console as wide as the terminal (80 columns when output goes to a pipe or file)."""
    return Console(width=shutil.get_terminal_size().columns)
