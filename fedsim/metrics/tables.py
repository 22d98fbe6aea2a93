"""Per-run and per-configuration tables of loaded runs, and their terminal rendering.

Every function here is pure: it takes the tidy frame of
:func:`fedsim.metrics.report.load_runs` (or a table computed from it) and returns a new
table, or a rich :class:`~rich.table.Table` to print.
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd
from rich.table import Table
from rich.text import Text

from fedsim.metrics.plots import (
    RUN_IDENTITY,
    TIDY_COLUMNS,
    distinguishing,
    run_labels,
    setting_overrides,
)

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


def summarize(runs: pd.DataFrame, target: float | None = None) -> pd.DataFrame:
    """One row per run: its overrides, the final value of each aggregate metric, its rounds,
    the times to ``target`` accuracy if given, and its settings.

    Parameters
    ----------
    runs
        Tidy metrics as returned by :func:`~fedsim.metrics.report.load_runs`.
    target
        An accuracy; adds the columns of :func:`reach_target`.

    Returns
    -------
    pandas.DataFrame
        Columns ``run``, ``overrides``, ``status`` (if ``runs`` has it: ``completed``,
        ``stalled``, ``interrupted``, ...), one per aggregate metric (the value at the last
        round in which that metric was recorded; per-node rows are left out), ``rounds``,
        the last round the run recorded anything for, the graph metadata, the target
        columns, then every config column of :func:`~fedsim.metrics.report.load_runs` (a
        setting named like an earlier column gets a ``config.`` prefix: ``config.rounds``).
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
    identity = ["overrides", *(["status"] if "status" in runs else [])]
    summary = per_run[identity].first().join(final[headline + others])
    summary = summary.join(per_run["round"].max().rename("rounds"))
    graph = [column for column in GRAPH_COLUMNS if column in runs]
    summary = summary.join(per_run[graph].first())
    if target is not None:
        summary = summary.join(reach_target(runs, target))
    settings = [
        column
        for column in runs
        if column not in TIDY_COLUMNS | {"overrides", "status"} and not column.startswith("graph.")
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
    if "status" in summary:  # an unfinished run must not pass for a finished one
        cells["status"] = summary["status"].fillna("-").astype(str)
    for header, (column, spec, scale) in {**SUMMARY_CELLS, **_target_cells(summary)}.items():
        cells[header] = _format_numbers(summary, column, spec, scale)
        if column in TARGET_SOURCES and column in summary:
            cells[header] = cells[header].mask(summary["rounds_to_target"].isna(), "not reached")
    if "round_unit" in summary:  # 300 ticks of gossip are not 300 rounds of D-PSGD
        unit = summary["round_unit"]
        other = unit.notna() & (unit != "round")
        cells["rounds"] = cells["rounds"].mask(other, cells["rounds"] + " " + unit + "s")
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
        if index < 2 or header == "status":  # labels: folded, never cut short
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


def markdown_table(table: pd.DataFrame, digits: int = 4, index: bool = False) -> str:
    """``table`` as a GitHub markdown table, floats with ``digits`` decimals (no tabulate)."""
    if index:
        table = table.reset_index()
    table = table.set_axis(
        [" ".join(map(str, c)) if isinstance(c, tuple) else str(c) for c in table.columns], axis=1
    )
    rows = [
        [f"{v:.{digits}f}" if isinstance(v, float) else str(v) for v in row]
        for row in table.itertuples(index=False)
    ]
    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows]) + "\n"
