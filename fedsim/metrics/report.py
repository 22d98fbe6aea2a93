"""Read the run directories written by ``fedsim run`` and summarise them.

A run directory is any directory holding ``metrics.parquet`` (one file, or a directory
of part files). Its configuration comes from ``summary.json``, or, for a run killed
before writing it, from the ``.hydra/`` files that Hydra writes at start-up; its status
from ``summary.json`` and the lock a live run holds (:func:`run_status`). A run whose
files cannot be read is skipped and named, with what is wrong (:class:`UnreadableRun`).
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from fedsim.metrics.figures import check_axes, write_figures
from fedsim.metrics.plots import plot_label_histograms
from fedsim.metrics.recorder import read_rows
from fedsim.metrics.tables import aggregate_seeds, summarize

METRICS_FILE = "metrics.parquet"
LOCK_FILE = ".fedsim.lock"
"""What ``fedsim run`` holds an exclusive ``flock`` on, in the run (or sweep) directory."""
STATUSES = ("completed", "stalled", "diverged", "running", "interrupted", "failed")
"""What :func:`run_status` says; only ``completed`` ran all its rounds (or its budget)."""
CHOICE_GROUPS = ("strategy", "topology", "data", "partition", "model", "backend", "optimizer")
"""Config groups that always get a column, empty when a run does not record its choice."""
SKIPPED_KEYS = frozenset({"_target_", "_partial_"})
RUN_FACTS = ("round_unit", "stopped_by")
"""Entries of ``summary.json`` that become columns of :func:`load_runs`, where recorded."""
UNREADABLE = (OSError, ValueError, pa.ArrowException, yaml.YAMLError, OmegaConfBaseException)
"""What reading a run's files raises when they are truncated, junk or of another shape."""


@dataclass(frozen=True)
class UnreadableRun:
    """A run directory that :func:`load_runs` and :func:`report` skipped, and why."""

    run_dir: Path
    reason: str
    """One line: the file and what is wrong with it."""

    def __str__(self) -> str:
        return f"{self.run_dir}: {self.reason}"


class NoReadableRunError(ValueError):
    """Every run at or below a path is unreadable."""


def find_run_dirs(root: Path) -> list[Path]:
    """Every directory at or below ``root`` that holds a ``metrics.parquet``, in natural order.

    Natural order sorts Hydra's job directories ``0, 1, 2, ..., 10`` by number.
    """
    found = (
        match.parent
        for match in root.rglob(METRICS_FILE)
        if METRICS_FILE not in match.relative_to(root).parts[:-1]
    )
    return sorted(found, key=lambda run_dir: _natural_key(run_dir.relative_to(root)))


def _natural_key(relative: Path) -> list[list[tuple[int, str]]]:
    # re.split with a group alternates text and digits; the text breaks ties such as 01 vs 1.
    return [
        [
            (int(piece) if index % 2 else 0, piece)
            for index, piece in enumerate(re.split(r"(\d+)", part))
        ]
        for part in relative.parts
    ]


def load_runs(*paths: str | Path) -> pd.DataFrame:
    """Load the metrics of every run at or below ``paths`` as one tidy frame.

    Parameters
    ----------
    *paths
        Run directories, or sweep directories with run directories below them; several
        sweeps make one frame.

    Returns
    -------
    pandas.DataFrame
        The metric rows (``round``, ``metric``, ``value``, ``node``) with ``run``, the run
        directory relative to the one path (``"."`` for the path itself) or, with several,
        to their common parent (``sweep_a/0``), ``overrides`` (joined by spaces),
        ``status`` (:func:`run_status`), ``round_unit`` (``tick`` for gossip) and
        ``stopped_by`` (the budget that ended it) where recorded, one column per config group
        choice, and one per scalar config value under its dotted name
        (``strategy.sample_size``).

    Raises
    ------
    FileNotFoundError
        If no ``metrics.parquet`` exists at or below a path.
    NoReadableRunError
        If no run can be read; one that cannot among others that can gives a warning
        naming it and what is wrong, and is left out.
    """
    runs, _, unreadable = _load_runs(paths)
    for run in unreadable:
        warnings.warn(f"skipped unreadable run {run}", stacklevel=2)
    return runs


def _load_runs(
    paths: Sequence[str | Path],
) -> tuple[pd.DataFrame, list[Path], tuple[UnreadableRun, ...]]:
    """:func:`load_runs`, the directories of the runs read, and those skipped."""
    if not paths:
        raise ValueError("load_runs needs at least one run or sweep directory")
    run_dirs = _run_dirs([Path(path) for path in paths])
    metrics, configs, read, unreadable = [], [], [], []
    for run_dir, name in run_dirs.items():
        try:
            rows, config = _read_metrics(run_dir), _run_config(run_dir)
            status = run_status(run_dir)
        except UNREADABLE as error:
            unreadable.append(UnreadableRun(run_dir, " ".join(str(error).split())))
            continue
        metrics.append(rows.assign(run=name))
        configs.append({"run": name, "status": status, **config})
        read.append(run_dir)
    if not read:
        problems = "; ".join(map(str, unreadable))
        where = " ".join(map(str, paths))
        raise NoReadableRunError(f"no readable run at or below {where}: {problems}")
    runs = pd.concat(metrics, ignore_index=True)
    config = pd.DataFrame(configs)
    # A config key named like a metric column must not shadow it.
    clashes = {column: f"config.{column}" for column in config.columns[1:] if column in runs}
    runs = runs.merge(config.rename(columns=clashes), on="run", how="left")
    return runs[["run", *(column for column in runs if column != "run")]], read, tuple(unreadable)


def _run_dirs(roots: list[Path]) -> dict[Path, str]:
    """Each run directory at or below ``roots``, once, in their order, with its name: its
    path relative to the one root or, with several, to their common parent."""
    found: dict[Path, Path] = {}
    for root in roots:
        run_dirs = find_run_dirs(root)
        if not run_dirs:
            raise FileNotFoundError(f"no {METRICS_FILE} found at or below {root}")
        for run_dir in run_dirs:
            found.setdefault(run_dir.resolve(), run_dir)
    if len(roots) == 1:
        base = roots[0].resolve()
    else:
        base = Path(os.path.commonpath([root.resolve() for root in roots]))
        if base in {root.resolve() for root in roots}:  # one path holds another
            base = base.parent
    return {run_dir: resolved.relative_to(base).as_posix() for resolved, run_dir in found.items()}


def run_status(run_dir: str | Path) -> str:
    """What became of a run: one of :data:`STATUSES`.

    ``summary.json`` says ``completed``, ``stalled``, ``diverged``, ``interrupted`` (Ctrl-C
    or SIGTERM) or ``failed``; a run that is still ``running`` there, or that has no
    summary yet, is ``running`` while a process holds the lock of its directory (or of
    its sweep's) and ``interrupted`` otherwise: it was killed (SIGKILL, out of memory, a
    lost machine). A status this version does not know is returned as written.
    """
    run_dir = Path(run_dir)
    summary_file = run_dir / "summary.json"
    status = "running"
    if summary_file.is_file():
        summary = json.loads(summary_file.read_text())
        if isinstance(summary, dict) and isinstance(summary.get("status"), str):
            status = summary["status"].split(":")[0]  # "failed: disk full"
    if status != "running":
        return status
    return "running" if _locked(run_dir) else "interrupted"


def _locked(run_dir: Path) -> bool:
    """Whether a process holds the lock of ``run_dir`` or of a directory above it."""
    for directory in (run_dir.resolve(), *run_dir.resolve().parents):
        lock = directory / LOCK_FILE
        if not lock.is_file():
            continue
        with lock.open("rb") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(handle, fcntl.LOCK_UN)
        return False
    return False


def _read_metrics(run_dir: Path) -> pd.DataFrame:
    rows = read_rows(run_dir / METRICS_FILE).to_pandas()
    return rows.astype({"round": "int64", "node": "Int64"})


def _run_config(run_dir: Path) -> dict[str, Any]:
    """Overrides, group choices and flattened config of one run."""
    summary_file = run_dir / "summary.json"
    if summary_file.is_file():
        try:
            summary = json.loads(summary_file.read_text())
        except ValueError as error:  # not JSON, or not UTF-8
            raise ValueError(f"summary.json: {error}") from error
        summary = _expect(summary, dict, "summary.json")
        choices = _expect(summary.get("choices"), dict, "summary.json: choices")
        overrides = _expect(summary.get("overrides"), list, "summary.json: overrides")
        config = _expect(summary.get("config"), dict, "summary.json: config")
        topology = _expect(summary.get("topology"), dict, "summary.json: topology")
        graph = {f"graph.{key}": value for key, value in topology.items()}
        # what a round is (a tick, a server update) and which budget ended the run
        graph |= {key: summary[key] for key in RUN_FACTS if summary.get(key) is not None}
    else:
        graph = {}
        hydra_dir = run_dir / ".hydra"
        choices = _read_yaml(hydra_dir / "hydra.yaml", dict, "hydra.runtime.choices")
        overrides = _read_yaml(hydra_dir / "overrides.yaml", list)
        config = _read_yaml(hydra_dir / "config.yaml", dict)
    return {
        "overrides": " ".join(map(str, overrides)),
        **{group: None for group in CHOICE_GROUPS},
        **{group: choice for group, choice in choices.items() if not group.startswith("hydra/")},
        **_flatten(config),
        **graph,
    }


def _expect(value: Any, kind: type, where: str) -> Any:
    """``value``, an empty ``kind`` for None; ValueError naming ``where`` for another type."""
    if value is None:
        return kind()
    if not isinstance(value, kind):
        raise ValueError(f"{where} is a {type(value).__name__}, not a {kind.__name__}")
    return value


def _read_yaml(path: Path, kind: type, key: str | None = None) -> Any:
    """Plain ``kind`` from a YAML file (empty if absent), resolved where possible."""
    if not path.is_file():
        return kind()
    where = f"{path.parent.name}/{path.name}"
    try:
        node = OmegaConf.load(path)
    except (yaml.YAMLError, OmegaConfBaseException) as error:
        raise ValueError(f"{where}: {error}") from error
    if key is not None:
        node = OmegaConf.select(node, key)
        if node is None:
            return kind()
        where = f"{where}: {key}"
    try:
        plain = OmegaConf.to_container(node, resolve=True)
    except OmegaConfBaseException:  # e.g. ${hydra:...}, whose resolver only a Hydra app has
        plain = OmegaConf.to_container(node, resolve=False)
    except ValueError:  # a scalar, not a container
        plain = node
    return _expect(plain, kind, where)


def _flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Scalar leaves under dotted names; lists become their string form."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if key in SKIPPED_KEYS:
            continue
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat |= _flatten(value, prefix=f"{name}.")
        else:
            flat[name] = str(value) if isinstance(value, list) else value
    return flat


@dataclass(frozen=True)
class Report:
    """What :func:`report` computed and wrote."""

    summary: pd.DataFrame
    """One row per run, as returned by :func:`~fedsim.metrics.tables.summarize`."""
    by_config: pd.DataFrame | None
    """One row per configuration (:func:`~fedsim.metrics.tables.aggregate_seeds`); None unless
    some has several seeds."""
    files: tuple[Path, ...]
    """Every file written, tables first."""
    unreadable: tuple[UnreadableRun, ...] = ()
    """The runs left out, as their files cannot be read."""


def report(
    paths: str | Path | Sequence[str | Path],
    out_dir: str | Path | None = None,
    target: float | None = None,
    *,
    metric: str = "accuracy",
    x: str | None = None,
    logx: bool | None = None,
) -> Report:
    """Summarise the runs at or below ``paths`` (one, or several sweeps) into tables and
    figures.

    Writes into ``out_dir`` (default: the one path; needed with several) ``report.csv``
    (:func:`~fedsim.metrics.tables.summarize`), ``report_by_config.csv``
    (:func:`~fedsim.metrics.tables.aggregate_seeds`, when some configuration has several
    seeds), the figures of :func:`fedsim.metrics.figures.write_figures` (``metric``
    against ``x``, every recorded x axis if None; ``logx`` None: log scale for bytes only)
    and, for a single run, ``label_histograms.png``. ``target`` adds the times to that
    accuracy. Unreadable runs are left out and listed in :attr:`Report.unreadable`; it
    raises :class:`NoReadableRunError` if all are, and ValueError for an ``out_dir``
    missing with several paths, or a ``metric`` or ``x`` the runs do not record, before
    writing anything.
    """
    roots = [paths] if isinstance(paths, str | Path) else list(paths)
    if out_dir is None and len(roots) != 1:
        raise ValueError("out_dir is needed with several paths: where should the report go?")
    runs, run_dirs, unreadable = _load_runs(roots)
    check_axes(runs, metric, x)
    summary = summarize(runs, target)
    out = Path(roots[0] if out_dir is None else out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary.to_csv(out / "report.csv", index=False)
    files = [out / "report.csv"]
    by_config = aggregate_seeds(summary)
    repeated = bool((by_config["seeds"] > 1).any())
    if repeated:
        by_config.to_csv(out / "report_by_config.csv", index=False)
        files.append(out / "report_by_config.csv")
    files += write_figures(runs, out, metric, x, logx=logx)
    partition = run_dirs[0] / "partition.parquet"
    if len(run_dirs) == 1 and partition.is_file():
        try:
            histograms = pd.read_parquet(partition, columns=["node", "label", "count"])
        except UNREADABLE as error:
            warnings.warn(f"no label histograms: {partition}: {error}", stacklevel=2)
        else:
            plot_label_histograms(histograms, out / "label_histograms.png")
            files.append(out / "label_histograms.png")
    return Report(summary, by_config if repeated else None, tuple(files), unreadable)
