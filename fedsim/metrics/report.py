"""Read the run directories written by ``fedsim run`` and summarise them.

A run directory is any directory holding ``metrics.parquet`` (one file, or a directory
of part files). Its configuration comes from ``summary.json``, or, for a run killed
before writing it, from the ``.hydra/`` files that Hydra writes at start-up. A run whose
files cannot be read is skipped and named, with what is wrong (:class:`UnreadableRun`).
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from fedsim.metrics.figures import write_figures
from fedsim.metrics.plots import plot_label_histograms
from fedsim.metrics.recorder import read_rows
from fedsim.metrics.tables import aggregate_seeds, summarize

METRICS_FILE = "metrics.parquet"
CHOICE_GROUPS = ("strategy", "topology", "data", "partition", "model", "backend", "optimizer")
"""Config groups that always get a column, empty when a run does not record its choice."""
SKIPPED_KEYS = frozenset({"_target_", "_partial_"})
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


def load_runs(path: str | Path) -> pd.DataFrame:
    """Load the metrics of every run at or below ``path`` as one tidy frame.

    Parameters
    ----------
    path
        A run directory, or a sweep directory with run directories below it.

    Returns
    -------
    pandas.DataFrame
        The metric rows (``round``, ``metric``, ``value``, ``node``) with ``run``, the run
        directory relative to ``path`` (``"."`` for ``path`` itself), ``overrides`` (joined
        by spaces), one column per config group choice, and one per scalar config value
        under its dotted name (``strategy.sample_size``).

    Raises
    ------
    FileNotFoundError
        If no ``metrics.parquet`` exists at or below ``path``.
    NoReadableRunError
        If no run can be read; one that cannot among others that can gives a warning
        naming it and what is wrong, and is left out.
    """
    runs, _, unreadable = _load_runs(Path(path))
    for run in unreadable:
        warnings.warn(f"skipped unreadable run {run}", stacklevel=2)
    return runs


def _load_runs(root: Path) -> tuple[pd.DataFrame, list[Path], tuple[UnreadableRun, ...]]:
    """:func:`load_runs`, the directories of the runs read, and those skipped."""
    run_dirs = find_run_dirs(root)
    if not run_dirs:
        raise FileNotFoundError(f"no {METRICS_FILE} found at or below {root}")
    metrics, configs, read, unreadable = [], [], [], []
    for run_dir in run_dirs:
        name = run_dir.relative_to(root).as_posix()
        try:
            rows, config = _read_metrics(run_dir), _run_config(run_dir)
        except UNREADABLE as error:
            unreadable.append(UnreadableRun(run_dir, " ".join(str(error).split())))
            continue
        metrics.append(rows.assign(run=name))
        configs.append({"run": name, **config})
        read.append(run_dir)
    if not read:
        problems = "; ".join(map(str, unreadable))
        raise NoReadableRunError(f"no readable run at or below {root}: {problems}")
    runs = pd.concat(metrics, ignore_index=True)
    config = pd.DataFrame(configs)
    # A config key named like a metric column must not shadow it.
    clashes = {column: f"config.{column}" for column in config.columns[1:] if column in runs}
    runs = runs.merge(config.rename(columns=clashes), on="run", how="left")
    return runs[["run", *(column for column in runs if column != "run")]], read, tuple(unreadable)


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
    path: str | Path, out_dir: str | Path | None = None, target: float | None = None
) -> Report:
    """Summarise the runs at or below ``path`` into tables and figures.

    Writes into ``out_dir`` (default: ``path``) ``report.csv``
    (:func:`~fedsim.metrics.tables.summarize`), ``report_by_config.csv``
    (:func:`~fedsim.metrics.tables.aggregate_seeds`, when some configuration has several
    seeds), the standard figures of :func:`fedsim.metrics.figures.write_figures` and, for
    a single run, ``label_histograms.png``. ``target`` adds the times to that accuracy.
    Unreadable runs are left out and listed in :attr:`Report.unreadable`; it raises
    :class:`NoReadableRunError` if all are.
    """
    runs, run_dirs, unreadable = _load_runs(Path(path))
    summary = summarize(runs, target)
    out = Path(path if out_dir is None else out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary.to_csv(out / "report.csv", index=False)
    files = [out / "report.csv"]
    by_config = aggregate_seeds(summary)
    repeated = bool((by_config["seeds"] > 1).any())
    if repeated:
        by_config.to_csv(out / "report_by_config.csv", index=False)
        files.append(out / "report_by_config.csv")
    files += write_figures(runs, out)
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
