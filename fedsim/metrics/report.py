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
from rich.table import Table
from rich.text import Text

from fedsim.metrics.figures import write_figures
from fedsim.metrics.plots import (
    RUN_IDENTITY,
    TIDY_COLUMNS,
    distinguishing,
    plot_label_histograms,
    run_labels,
    setting_overrides,
)

METRICS_FILE = "metrics.parquet"
METRIC_DTYPES = {"round": "int64", "metric": "str", "value": "float64", "node": "Int64"}
CHOICE_GROUPS = ("strategy", "topology", "data", "partition", "model", "backend", "optimizer")
"""Config groups that always get a column, empty when a run does not record its choice."""
SKIPPED_KEYS = frozenset({"_target_", "_partial_"})
GRAPH_COLUMNS = ("graph.spectral_gap", "graph.degree_mean", "graph.num_components")
"""Topology metadata (``summary.json``'s ``topology``) that the summary carries along."""
HEADLINE_METRICS = ("accuracy", "loss", "consensus_distance", "bytes_sent_total")
"""Summary columns that come first; other aggregate metrics follow alphabetically."""
TARGET_SOURCES = {
    "rounds_to_target": "round",
    "bytes_to_target": "bytes_sent_total",
    "seconds_to_target": "wall_time_s",
    "sim_seconds_to_target": "sim_time_s",
}
"""Columns of :func:`reach_target` and what each reads in the round the target is reached."""
SUMMARY_CELLS = {
    "final accuracy": ("accuracy", "{:.4f}", 1.0),
    "loss": ("loss", "{:.4g}", 1.0),
    "bytes sent (MB)": ("bytes_sent_total", "{:.2f}", 1e-6),
    "rounds": ("rounds", "{:.0f}", 1.0),
    "spectral gap": ("graph.spectral_gap", "{:.3g}", 1.0),
}
"""Terminal table header -> (summary column, format, scale)."""
TARGET_CELLS = {
    "rounds to target": ("rounds_to_target", "{:.0f}", 1.0),
    "MB to target": ("bytes_to_target", "{:.2f}", 1e-6),
    "seconds to target": ("seconds_to_target", "{:.3g}", 1.0),
    "simulated s to target": ("sim_seconds_to_target", "{:.3g}", 1.0),
}


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


def summarize(runs: pd.DataFrame, target: float | None = None) -> pd.DataFrame:
    """One row per run: its overrides, the final value of each aggregate metric, its rounds,
    the times to ``target`` accuracy if given, and its settings.

    Parameters
    ----------
    runs
        Tidy metrics as returned by :func:`load_runs`.
    target
        An accuracy; adds the columns of :func:`reach_target`.

    Returns
    -------
    pandas.DataFrame
        Columns ``run``, ``overrides``, one per aggregate metric (the value at the last
        round in which that metric was recorded; per-node rows are left out), ``rounds``,
        the last round the run recorded anything for, the graph metadata, the target
        columns, then every config column of :func:`load_runs` (a setting named like an
        earlier column gets a ``config.`` prefix: ``config.rounds``).
    """
    aggregate = runs[runs["node"].isna()]
    final = (
        aggregate.sort_values("round", kind="stable")
        .drop_duplicates(["run", "metric"], keep="last")
        .pivot(index="run", columns="metric", values="value")
    )
    headline = [metric for metric in HEADLINE_METRICS if metric in final]
    others = sorted(set(final.columns) - set(headline))
    per_run = runs.groupby("run", sort=False)
    summary = per_run[["overrides"]].first().join(final[headline + others])
    summary = summary.join(per_run["round"].max().rename("rounds"))
    graph = [column for column in GRAPH_COLUMNS if column in runs]
    summary = summary.join(per_run[graph].first())
    if target is not None:
        summary = summary.join(reach_target(runs, target))
    settings = [
        column
        for column in runs
        if column not in TIDY_COLUMNS | {"overrides"} and not column.startswith("graph.")
    ]
    clashes = {column: f"config.{column}" for column in settings if column in summary}
    summary = summary.join(per_run[settings].first().rename(columns=clashes))
    return summary.rename_axis(index="run", columns=None).reset_index()


def reach_target(runs: pd.DataFrame, target: float) -> pd.DataFrame:
    """When each run's ``accuracy`` first reached ``target`` (an evaluated round with
    accuracy >= target), and what it had cost by then.

    Returns
    -------
    pandas.DataFrame
        Indexed by run, in run order: ``rounds_to_target``, ``bytes_to_target``
        (``bytes_sent_total`` in that round), ``seconds_to_target`` (``wall_time_s``) and,
        when any run records ``sim_time_s``, ``sim_seconds_to_target``; NaN where the
        target was not reached.

    Raises
    ------
    ValueError
        If ``target`` is not in (0, 1].
    """
    if not 0 < target <= 1:
        raise ValueError(f"target={target} must be an accuracy in (0, 1]")
    sources = {metric: column for column, metric in TARGET_SOURCES.items()}
    costs = [metric for metric in sources if metric != "round"]
    rows = runs[runs["node"].isna() & runs["metric"].isin(["accuracy", *costs])]
    wide = (
        rows.drop_duplicates(["run", "round", "metric"], keep="last")
        .pivot(index=["run", "round"], columns="metric", values="value")
        .reindex(columns=["accuracy", *costs])
        .reset_index()
    )
    reached = wide[wide["accuracy"] >= target].sort_values("round", kind="stable")
    first = reached.drop_duplicates("run").set_index("run").rename(columns=sources)
    columns = [c for c, metric in TARGET_SOURCES.items() if metric != "sim_time_s"]
    if (runs["metric"] == "sim_time_s").any():
        columns.append("sim_seconds_to_target")
    return first.reindex(index=runs["run"].unique(), columns=columns).astype("float64")


def aggregate_seeds(summary: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration: mean and standard deviation over its seeds of each measure.

    Runs form one configuration when all their settings are equal: every column of
    ``summary`` but :data:`~fedsim.metrics.plots.RUN_IDENTITY` (``run``, ``overrides``,
    ``seed``, ...) and the measured ones, which are ``rounds``, ``graph.*``, the target
    columns, and the final metrics (the float columns without a dot in their name).

    Parameters
    ----------
    summary
        Per-run rows as returned by :func:`summarize`.

    Returns
    -------
    pandas.DataFrame
        In order of first appearance: ``overrides`` (the first run's, without seed and
        other run-identity overrides), the settings that differ between configurations,
        ``seeds`` (runs aggregated), ``runs`` (their names), ``<measure>_mean`` and
        ``<measure>_std`` (ddof=1; NaN with one seed, or when a seed lacks the value: a
        target one seed did not reach), ``reached_target`` (seeds that reached it, when
        there are target columns), then the settings all configurations share.
    """
    measured = [column for column in summary if _is_measured(column, summary[column])]
    settings = [column for column in summary if column not in {*measured, *RUN_IDENTITY}]
    keys = settings or [pd.Series(0, index=summary.index)]
    groups = summary.groupby(keys, dropna=False, sort=False)
    complete = groups[measured].count().eq(groups.size(), axis=0)
    mean = groups[measured].mean().where(complete).add_suffix("_mean")
    std = groups[measured].std().where(complete).add_suffix("_std")
    stats = [f"{column}_{stat}" for column in measured for stat in ("mean", "std")]
    table = groups.agg(
        overrides=("overrides", lambda overrides: setting_overrides(overrides.iloc[0])),
        seeds=("run", "size"),
        runs=("run", " ".join),
    ).join([mean, std])
    if "rounds_to_target" in summary:
        table["reached_target"] = groups["rounds_to_target"].count()
        stats.append("reached_target")
    table = table.reset_index(drop=not settings)
    varying = [column for column in settings if table[column].nunique(dropna=False) > 1]
    shared = [column for column in settings if column not in varying]
    return table[["overrides", *varying, "seeds", "runs", *stats, *shared]]


def _is_measured(name: str, column: pd.Series) -> bool:
    if name in RUN_IDENTITY:
        return False
    if name == "rounds" or name.startswith("graph.") or name in TARGET_SOURCES:
        return True
    return pd.api.types.is_float_dtype(column) and "." not in name


def format_summary(summary: pd.DataFrame) -> Table:
    """Render the output of :func:`summarize` as a rich table for the terminal."""
    labels, shared = run_labels(summary)
    table = Table(title=f"fedsim runs: {shared}" if shared else "fedsim runs")
    cells = {
        "run": summary["run"].astype(str),
        "overrides": summary["run"].map(labels).fillna("").astype(str),
    }
    for header, (column, spec, scale) in {**SUMMARY_CELLS, **_target_cells(summary)}.items():
        cells[header] = _format_numbers(summary, column, spec, scale)
        if column in TARGET_SOURCES and column in summary:
            cells[header] = cells[header].mask(summary["rounds_to_target"].isna(), "not reached")
    return _table(table, cells)


def format_by_config(by_config: pd.DataFrame) -> Table:
    """Render the output of :func:`aggregate_seeds` as a rich table: mean +- std per cell."""
    labels, shared = distinguishing(by_config["overrides"])
    title = "fedsim configurations, mean ± std over seeds"
    table = Table(title=f"{title}: {shared}" if shared else title)
    cells = {
        "configuration": labels.where(labels != "", by_config["runs"]),
        "seeds": by_config["seeds"].astype(str),
    }
    shown = {header: cell for header, cell in SUMMARY_CELLS.items() if cell[0] != "rounds"}
    for header, (column, spec, scale) in {**shown, **_target_cells(by_config)}.items():
        mean = _format_numbers(by_config, f"{column}_mean", spec, scale)
        std = _format_numbers(by_config, f"{column}_std", "{:.2g}", scale)
        cells[header] = mean.where(std == "-", mean + " ± " + std)
        if column in TARGET_SOURCES and "reached_target" in by_config:
            cells[header] = cells[header].mask(
                by_config["rounds_to_target_mean"].isna(), "not reached"
            )
    if "reached_target" in by_config:  # some seeds reached it: say how many
        some = (by_config["reached_target"] > 0) & by_config["rounds_to_target_mean"].isna()
        reached = "reached by " + by_config["reached_target"].astype(str) + "/" + cells["seeds"]
        cells["rounds to target"] = cells["rounds to target"].mask(some, reached)
    return _table(table, cells)


def _target_cells(frame: pd.DataFrame) -> dict[str, tuple[str, str, float]]:
    return {
        header: cell
        for header, cell in TARGET_CELLS.items()
        if cell[0] in frame or f"{cell[0]}_mean" in frame
    }


def _table(table: Table, cells: Mapping[str, pd.Series]) -> Table:
    for index, header in enumerate(cells):
        if index < 2:  # labels: folded, never cut short
            table.add_column(header, overflow="fold")
        else:
            table.add_column(header, justify="right")
    for row in pd.DataFrame(dict(cells)).itertuples(index=False):
        # Text cells, because overrides like model.hidden=[64,64] would parse as markup.
        table.add_row(*(Text(str(cell)) for cell in row))
    return table


def _format_numbers(summary: pd.DataFrame, column: str, spec: str, scale: float = 1.0) -> pd.Series:
    if column not in summary:
        return pd.Series("-", index=summary.index)
    values = summary[column].astype("float64") * scale
    return values.map(lambda value: "-" if pd.isna(value) else spec.format(value))


@dataclass(frozen=True)
class Report:
    """What :func:`report` computed and wrote."""

    summary: pd.DataFrame
    """One row per run, as returned by :func:`summarize`."""
    by_config: pd.DataFrame | None
    """One row per configuration (:func:`aggregate_seeds`); None unless some has several seeds."""
    files: tuple[Path, ...]
    """Every file written, tables first."""


def report(
    path: str | Path, out_dir: str | Path | None = None, target: float | None = None
) -> Report:
    """Summarise the runs at or below ``path`` into tables and figures.

    Writes into ``out_dir`` (default: ``path``) ``report.csv`` (:func:`summarize`),
    ``report_by_config.csv`` (:func:`aggregate_seeds`, when some configuration has several
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
