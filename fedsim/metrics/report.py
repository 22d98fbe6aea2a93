"""Read the run directories written by ``fedsim run`` and summarise them.

A run directory is any directory holding ``metrics.parquet`` (one file, or a directory
of part files). Its configuration comes from ``summary.json``, or, for a run killed
before writing it, from the ``.hydra/`` files that Hydra writes at start-up.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from fedsim.metrics.figures import write_figures
from fedsim.metrics.plots import plot_label_histograms
from fedsim.metrics.tables import aggregate_seeds, summarize

METRICS_FILE = "metrics.parquet"
METRIC_DTYPES = {"round": "int64", "metric": "str", "value": "float64", "node": "Int64"}
CHOICE_GROUPS = ("strategy", "topology", "data", "partition", "model", "backend", "optimizer")
"""Config groups that always get a column, empty when a run does not record its choice."""
SKIPPED_KEYS = frozenset({"_target_", "_partial_"})


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
    """
    root = Path(path)
    run_dirs = find_run_dirs(root)
    if not run_dirs:
        raise FileNotFoundError(f"no {METRICS_FILE} found at or below {root}")
    named = {run_dir.relative_to(root).as_posix(): run_dir for run_dir in run_dirs}
    metrics = pd.concat(
        [_read_metrics(run_dir).assign(run=name) for name, run_dir in named.items()],
        ignore_index=True,
    )
    config = pd.DataFrame(
        [{"run": name, **_run_config(run_dir)} for name, run_dir in named.items()]
    )
    # A config key named like a metric column must not shadow it.
    clashes = {column: f"config.{column}" for column in config.columns[1:] if column in metrics}
    config = config.rename(columns=clashes)
    runs = metrics.merge(config, on="run", how="left")
    return runs[["run", *(column for column in runs if column != "run")]]


def _read_metrics(run_dir: Path) -> pd.DataFrame:
    metrics = pd.read_parquet(run_dir / METRICS_FILE)
    if metrics.columns.empty:  # a part-file directory before its first flush
        return pd.DataFrame({name: pd.Series(dtype=dtype) for name, dtype in METRIC_DTYPES.items()})
    return metrics.astype({"round": "int64", "node": "Int64"})


def _run_config(run_dir: Path) -> dict[str, Any]:
    """Overrides, group choices and flattened config of one run."""
    summary_file = run_dir / "summary.json"
    if summary_file.is_file():
        summary = json.loads(summary_file.read_text())
        choices = summary.get("choices") or {}
        overrides = summary.get("overrides") or []
        config = summary.get("config") or {}
        graph = {f"graph.{key}": value for key, value in (summary.get("topology") or {}).items()}
    else:
        graph = {}
        hydra_dir = run_dir / ".hydra"
        choices = _read_yaml(hydra_dir / "hydra.yaml", "hydra.runtime.choices") or {}
        overrides = _read_yaml(hydra_dir / "overrides.yaml") or []
        config = _read_yaml(hydra_dir / "config.yaml") or {}
    return {
        "overrides": " ".join(overrides),
        **{group: None for group in CHOICE_GROUPS},
        **{group: choice for group, choice in choices.items() if not group.startswith("hydra/")},
        **_flatten(config),
        **graph,
    }


def _read_yaml(path: Path, key: str | None = None) -> Any:
    """Plain containers from a YAML file (``None`` if absent), resolved where possible."""
    if not path.is_file():
        return None
    node = OmegaConf.load(path)
    if key is not None:
        node = OmegaConf.select(node, key)
        if node is None:
            return None
    try:
        return OmegaConf.to_container(node, resolve=True)
    except OmegaConfBaseException:  # e.g. ${hydra:...}, whose resolver only a Hydra app has
        return OmegaConf.to_container(node, resolve=False)


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


def report(
    path: str | Path, out_dir: str | Path | None = None, target: float | None = None
) -> Report:
    """Summarise the runs at or below ``path`` into tables and figures.

    Writes into ``out_dir`` (default: ``path``) ``report.csv``
    (:func:`~fedsim.metrics.tables.summarize`), ``report_by_config.csv``
    (:func:`~fedsim.metrics.tables.aggregate_seeds`, when some configuration has several
    seeds), the standard figures of :func:`fedsim.metrics.figures.write_figures` and, for
    a single run, ``label_histograms.png``. ``target`` adds the times to that accuracy.
    """
    runs = load_runs(path)
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
    run_dirs = find_run_dirs(Path(path))
    if len(run_dirs) == 1 and (run_dirs[0] / "partition.parquet").is_file():
        histograms = pd.read_parquet(run_dirs[0] / "partition.parquet")
        plot_label_histograms(histograms, out / "label_histograms.png")
        files.append(out / "label_histograms.png")
    return Report(summary, by_config if repeated else None, tuple(files))
