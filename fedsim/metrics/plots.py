"""Curves of runs grouped into configurations, drawn with matplotlib's ``Figure`` API.

The input is the tidy frame of :func:`fedsim.metrics.report.load_runs`. Runs that differ
only in their seed (or in settings that do not change results, :data:`RUN_IDENTITY`) form
one configuration, drawn as one line: the mean over its seeds, with a band. Figures are
built on :class:`matplotlib.figure.Figure` directly, so no pyplot state or GUI backend is
involved and nothing needs closing.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

RUN_IDENTITY = frozenset({"run", "overrides", "seed", "progress", "resume", "checkpoint_every"})
"""Columns that tell apart the runs of one configuration, or do not change its results."""
TIDY_COLUMNS = frozenset({"run", "round", "metric", "value", "node"})
LINE_STYLES = ("-", "--", ":", "-.")
MANY_LINES = 8
"""Above this many lines the legend moves outside the axes, in a smaller font."""


def distinguishing(overrides: pd.Series) -> tuple[pd.Series, str]:
    """The overrides that tell each entry apart from the others, and those all entries share.

    An entry whose overrides are all shared gets an empty label.
    """
    tokens = overrides.fillna("").str.split()
    if tokens.empty:
        return pd.Series(dtype="str"), ""
    shared = set.intersection(*map(set, tokens)) if len(tokens) > 1 else set()
    labels = tokens.map(lambda entry: " ".join(token for token in entry if token not in shared))
    return labels, " ".join(token for token in tokens.iloc[0] if token in shared)


def setting_overrides(overrides: str) -> str:
    """``overrides`` without those of :data:`RUN_IDENTITY` keys (``seed=3``, ``progress=false``)."""
    tokens = str(overrides).split() if pd.notna(overrides) else []
    return " ".join(token for token in tokens if token.split("=")[0] not in RUN_IDENTITY)


def run_labels(runs: pd.DataFrame) -> tuple[dict[str, str], str]:
    """Each run's distinguishing overrides (its directory name if none), in run order, and
    the overrides all runs share. ``runs`` needs the columns ``run`` and ``overrides``."""
    labels, shared = distinguishing(runs.groupby("run", sort=False)["overrides"].first())
    return {run: label or str(run) for run, label in labels.items()}, shared


def configurations(runs: pd.DataFrame) -> tuple[pd.Series, str]:
    """Each run's configuration label, indexed by run in run order, and the shared overrides.

    Runs belong to one configuration when every column of ``runs`` but the metric columns,
    :data:`RUN_IDENTITY` and the graph metadata (``graph.*``, which a random topology
    draws per seed) is equal. A configuration is labelled by its distinguishing overrides,
    seeds left out; a configuration without any, by its run names.
    """
    settings = [
        column
        for column in runs
        if column not in TIDY_COLUMNS | RUN_IDENTITY and not column.startswith("graph.")
    ]
    per_run = runs.groupby("run", sort=False)[[*settings, "overrides"]].first()
    if settings:
        config_ids = per_run.groupby(settings, dropna=False, sort=False).ngroup()
    else:
        config_ids = pd.Series(0, index=per_run.index)
    first_runs = config_ids.drop_duplicates()
    seedless = per_run.loc[first_runs.index, "overrides"].map(setting_overrides)
    labels, shared = distinguishing(seedless.set_axis(first_runs.to_numpy()))
    names = pd.Series(per_run.index, index=per_run.index).groupby(config_ids).agg(", ".join)
    labels = labels.where(labels != "", names)
    if labels.duplicated().any():  # configurations that no override tells apart
        labels = labels + " [" + names + "]"
    return config_ids.map(labels), shared


def curves(
    runs: pd.DataFrame, y: str, x: str = "round", band: Sequence[str] | None = None
) -> pd.DataFrame:
    """One curve per configuration of aggregate metric ``y`` against ``round`` or a metric.

    Returns
    -------
    pandas.DataFrame
        Columns ``configuration, round, x, y, lower, upper, seeds``: per configuration and
        round, the means over its seeds of ``x`` and ``y``, and the band: ``y`` +- the
        standard deviation over seeds (ddof=1; NaN with one seed) or, with ``band``, the
        means of those two metrics (``("node_accuracy_min", "node_accuracy_max")``).
    """
    metrics = [y, *([x] if x != "round" else []), *(band or ())]
    rows = runs[runs["node"].isna() & runs["metric"].isin(metrics)]
    wide = (
        rows.drop_duplicates(["run", "round", "metric"], keep="last")
        .pivot(index=["run", "round"], columns="metric", values="value")
        .reindex(columns=metrics)
        .reset_index()
    )
    labels, _ = configurations(runs)
    # pivot sorted the runs as strings ("10" < "2"); the lines follow the runs' order instead.
    rank = {run: index for index, run in enumerate(labels.index)}
    wide = wide.sort_values("run", key=lambda names: names.map(rank), kind="stable")
    wide = wide.assign(configuration=wide["run"].map(labels), x=wide[x]).dropna(subset=["x", y])
    groups = wide.groupby(["configuration", "round"], sort=False)
    mean, spread = groups[y].mean(), groups[y].std()
    table = pd.DataFrame({"x": groups["x"].mean(), "y": mean, "seeds": groups[y].size()})
    if band:
        table["lower"], table["upper"] = groups[band[0]].mean(), groups[band[1]].mean()
    else:
        table["lower"], table["upper"] = mean - spread, mean + spread
    columns = ["configuration", "round", "x", "y", "lower", "upper", "seeds"]
    return table.reset_index()[columns]


def draw_curves(
    table: pd.DataFrame,
    *,
    xlabel: str,
    ylabel: str,
    title: str,
    band_label: str | None = None,
    log_y: bool = False,
) -> Figure:
    """A figure with one line per configuration of ``table`` (from :func:`curves`) and its band.

    ``band_label`` titles the legend; where some configuration has several seeds, the title
    says so ("mean ± std over 3 seeds" without ``band_label``).
    """
    figure = Figure(figsize=(7.5, 4.5), layout="constrained")
    axes = figure.subplots()
    zero = table["y"] <= 0
    if log_y and zero.any():  # e.g. equal models at round 0: no place on a log axis
        table = table.copy()
        table.loc[zero, ["y", "lower", "upper"]] = float("nan")
        ylabel = f"{ylabel}; 0 not drawn"
    for index, (label, curve) in enumerate(table.groupby("configuration", sort=False)):
        curve = curve.sort_values("round", kind="stable")
        # The colour cycle has 10 colours; later lines differ by line style instead.
        colour, style = f"C{index % 10}", LINE_STYLES[index // 10 % len(LINE_STYLES)]
        axes.plot(curve["x"], curve["y"], style, color=colour, marker=".", label=label)
        if curve[["lower", "upper"]].notna().all(axis=1).any():
            axes.fill_between(
                curve["x"], curve["lower"], curve["upper"], color=colour, alpha=0.2, linewidth=0
            )
    if xlabel == "round":
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    if log_y:
        axes.set_yscale("log")
    axes.set(xlabel=xlabel, ylabel=ylabel)
    axes.grid(alpha=0.3)
    wrapped = "\n".join(textwrap.fill(line, width=70) for line in title.splitlines())
    axes.set_title(wrapped, fontsize="medium")
    seeds = table["seeds"].max()
    if seeds > 1:
        over_seeds = f"over {seeds} seeds" if table["seeds"].min() == seeds else "over seeds"
        band_label = (
            f"{band_label}; mean {over_seeds}" if band_label else f"mean ± std {over_seeds}"
        )
    if table["configuration"].nunique() > MANY_LINES:
        figure.legend(
            loc="outside right upper", fontsize="x-small", title=band_label, title_fontsize="small"
        )
    else:
        axes.legend(fontsize="small", title=band_label, title_fontsize="small")
    return figure


def plot_label_histograms(histograms: pd.DataFrame, path: str | Path, max_nodes: int = 100) -> None:
    """Each node's examples per class as stacked bars (``partition.parquet`` of a run).

    ``histograms`` has the columns ``node``, ``label`` and ``count``; with more than
    ``max_nodes`` nodes an evenly spaced subset is drawn.
    """
    table = histograms.pivot_table(index="node", columns="label", values="count", fill_value=0)
    if len(table) > max_nodes:
        table = table.iloc[:: -(-len(table) // max_nodes)]
    figure = Figure(figsize=(7.5, 4.0), layout="constrained")
    axes = figure.subplots()
    bottom = pd.Series(0, index=table.index)
    for index, label in enumerate(table.columns):
        colour = f"C{index % 10}"
        axes.bar(
            table.index, table[label], bottom=bottom, color=colour, width=0.9, label=str(label)
        )
        bottom = bottom + table[label]
    shown = len(table) < histograms["node"].nunique()
    axes.set_xlabel(
        f"node ({len(table)} of {histograms['node'].nunique()} shown)" if shown else "node"
    )
    axes.set_ylabel("training examples")
    axes.set_title("examples per class on each node")
    if len(table.columns) <= 20:
        axes.legend(
            title="class", fontsize="small", ncols=2, loc="upper left", bbox_to_anchor=(1.0, 1.0)
        )
    figure.savefig(path, dpi=120)
