"""Accuracy curves of one run or a sweep, drawn to PNG files.

The input is the tidy frame of :func:`fedsim.metrics.report.load_runs`. The figure is
built on :class:`matplotlib.figure.Figure` directly, so no pyplot state or GUI backend
is involved and nothing needs closing.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

X_AXES: dict[str, tuple[str, float]] = {
    "round": ("round", 1.0),
    "bytes_sent_total": ("bytes sent (total, MB)", 1e-6),
}
"""Legal ``x`` of :func:`plot_accuracy`: axis label and the factor that scales the values."""

LINE_STYLES = ("-", "--", ":", "-.")
MANY_RUNS = 8
"""Above this many runs the legend moves outside the axes, in a smaller font."""


def plot_accuracy(runs: pd.DataFrame, x: str, path: str | Path) -> None:
    """Draw accuracy against rounds or bytes sent, one line per run, into a PNG file.

    Parameters
    ----------
    runs
        Tidy metrics of one or more runs, as returned by ``load_runs``.
    x
        ``"round"``, or ``"bytes_sent_total"`` to pair each accuracy row with the
        total bytes sent by the same run in the same round (plotted in MB).
    path
        Where the PNG is written.

    Notes
    -----
    A line is labelled by the overrides that tell its run apart from the others; the
    overrides shared by every run go into the title. A run without distinguishing
    overrides is labelled by its directory name.
    """
    if x not in X_AXES:
        raise ValueError(f"x must be one of {sorted(X_AXES)}, got {x!r}")
    axis_label, scale = X_AXES[x]
    curves = _accuracy_curves(runs, x, scale)
    labels, shared = run_labels(runs)

    figure = Figure(figsize=(7.5, 4.5), layout="constrained")
    axes = figure.subplots()
    for index, (run, label) in enumerate(labels.items()):
        curve = curves[curves["run"] == run].sort_values("x", kind="stable")
        # The colour cycle has 10 colours; later runs differ by line style instead.
        style = LINE_STYLES[index // 10 % len(LINE_STYLES)]
        if not curve.empty:
            axes.plot(curve["x"], curve["accuracy"], style, marker=".", label=label)
    if x == "round":
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel(axis_label)
    axes.set_ylabel("accuracy")
    axes.grid(alpha=0.3)
    title = f"accuracy vs {axis_label}"
    if shared:
        title += "\n" + textwrap.fill(shared, width=90)
    axes.set_title(title, fontsize="medium")
    if curves.empty:
        axes.text(0.5, 0.5, "no accuracy recorded", transform=axes.transAxes, ha="center")
    elif len(labels) > MANY_RUNS:
        figure.legend(loc="outside right upper", fontsize="x-small")
    else:
        axes.legend(fontsize="small")
    figure.savefig(path, dpi=120)


def _aggregate_metric(runs: pd.DataFrame, metric: str, name: str) -> pd.DataFrame:
    """Rows ``run, round, <name>`` of one aggregate (not per-node) metric."""
    rows = runs[(runs["metric"] == metric) & runs["node"].isna()]
    return rows[["run", "round", "value"]].rename(columns={"value": name})


def _accuracy_curves(runs: pd.DataFrame, x: str, scale: float) -> pd.DataFrame:
    """Columns ``run, x, accuracy``, with ``x`` already scaled for the axis."""
    accuracy = _aggregate_metric(runs, "accuracy", "accuracy")
    if x == "round":
        curves = accuracy.assign(x=accuracy["round"])
    else:
        curves = accuracy.merge(_aggregate_metric(runs, x, "x"), on=["run", "round"])
    return curves.assign(x=curves["x"] * scale)


def run_labels(runs: pd.DataFrame) -> tuple[dict[str, str], str]:
    """Each run's distinguishing overrides (its label), in run order, and those all runs share.

    ``runs`` needs the columns ``run`` and ``overrides``.
    """
    overrides = runs.groupby("run", sort=False)["overrides"].first().fillna("")
    tokens = overrides.str.split()
    if tokens.empty:
        return {}, ""
    shared = set.intersection(*map(set, tokens)) if len(tokens) > 1 else set()
    labels = {
        run: " ".join(token for token in run_tokens if token not in shared) or str(run)
        for run, run_tokens in tokens.items()
    }
    shared_text = " ".join(token for token in tokens.iloc[0] if token in shared)
    return labels, shared_text


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
