"""The standard figures of runs and sweeps: a metric (accuracy) against rounds, local steps,
bytes or simulated seconds, the consensus distance, and each node's own accuracy.

Each figure has one line per configuration (the mean over its seeds, with a band), in its
strategy's colour; see :mod:`fedsim.metrics.plots`. In a notebook, :func:`plot_metric`,
:func:`plot_node_accuracy` and :func:`plot_all` return figures to show; ``fedsim report``
writes them with :func:`write_figures`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from fedsim.metrics.plots import configurations, curves, draw_curves, draw_panels, line_styles


@dataclass(frozen=True)
class XAxis:
    """What an x axis reads: ``round``, or an aggregate metric scaled for its label."""

    metric: str
    label: str
    per: str
    """The title's "accuracy per <per>"."""
    stem: str
    """The file name's ``..._vs_<stem>.png``."""
    scale: float = 1.0
    log: bool = False
    """Drawn on a log scale unless asked otherwise."""


X_AXES: dict[str, XAxis] = {
    "round": XAxis("round", "round", "round", "round"),
    "local_steps": XAxis(
        "local_steps", "local steps per node (mean over nodes)", "local step", "local_steps"
    ),
    "bytes": XAxis(
        "bytes_sent_total",
        "bytes sent by all nodes (MB)",
        "byte sent",
        "bytes",
        scale=1e-6,
        log=True,
    ),
    "sim_time_s": XAxis("sim_time_s", "simulated time (s)", "simulated second", "sim_time"),
}
"""``--x`` choice -> what it reads."""
METRIC_LABELS = {
    "accuracy": "test accuracy (fraction correct)",
    "loss": "test loss",
    "consensus_distance": "consensus distance (log scale)",
}
METRIC_TITLES = {
    "consensus_distance": "consensus distance per {per} "
    "(mean squared distance of the node models to their average)"
}
"""A figure's title, ``{per}`` its x axis' unit; other metrics: ``<metric> per {per}``."""
LOG_Y = frozenset({"consensus_distance"})
NODE_BAND = ("node_accuracy_min", "node_accuracy_max")
TITLE_SETTINGS = ("strategy", "topology", "data", "partition", "model", "num_nodes", "rounds")
"""The settings a lone configuration's title names, before its other overrides."""


def recorded(runs: pd.DataFrame) -> list[str]:
    """The aggregate metrics (one value per round, not per node) that ``runs`` record."""
    return sorted(runs.loc[runs["node"].isna(), "metric"].unique())


def check_axes(runs: pd.DataFrame, metric: str, x: str | None) -> None:
    """Raise ValueError naming the setting and the legal values if ``runs`` do not record
    ``metric``, ``x`` is not a key of :data:`X_AXES`, or no run records what ``x`` reads."""
    present = recorded(runs)
    if metric not in present:
        raise ValueError(
            f"metric {metric!r} is not recorded by these runs; recorded: {', '.join(present)}"
        )
    if x is None:
        return
    if x not in X_AXES:
        raise ValueError(f"x must be one of {', '.join(X_AXES)}; got {x!r}")
    if x != "round" and X_AXES[x].metric not in present:
        usable = [name for name, axis in X_AXES.items() if axis.metric in {"round", *present}]
        raise ValueError(
            f"x {x!r}: no run records {X_AXES[x].metric}; x can be {', '.join(usable)}"
        )


def plot_metric(
    runs: pd.DataFrame, metric: str = "accuracy", x: str = "round", *, logx: bool | None = None
) -> Figure | None:
    """Aggregate ``metric`` against ``x`` (a key of :data:`X_AXES`), one line per
    configuration; ``logx`` None puts bytes on a log axis, the others on a linear one.

    Returns
    -------
    matplotlib.figure.Figure or None
        None when no run recorded both ``metric`` and what ``x`` reads.

    Raises
    ------
    ValueError
        If ``x`` is not a key of :data:`X_AXES`.
    """
    axis = _axis(x)
    table = curves(runs, metric, axis.metric)
    if table.empty:
        return None
    table["x"] = table["x"] * axis.scale
    log_x = axis.log if logx is None else logx
    return draw_curves(
        table,
        xlabel=_xlabel(runs, axis, log_x),
        ylabel=METRIC_LABELS.get(metric, metric),
        title=_title(runs, METRIC_TITLES.get(metric, f"{metric} per {{per}}").format(per=axis.per)),
        log_x=log_x,
        log_y=metric in LOG_Y,
        styles=line_styles(runs),
    )


def plot_node_accuracy(
    runs: pd.DataFrame, x: str = "round", *, logx: bool | None = None
) -> Figure | None:
    """The mean, minimum and maximum of the nodes' own accuracies against ``x``: one panel
    per configuration. None when the runs recorded no per-node accuracy."""
    axis = _axis(x)
    table = curves(runs, "node_accuracy_mean", axis.metric, NODE_BAND)
    if table.empty:
        return None
    table["x"] = table["x"] * axis.scale
    log_x = axis.log if logx is None else logx
    return draw_panels(
        table,
        xlabel=_xlabel(runs, axis, log_x),
        ylabel="node accuracy (fraction correct)",
        title=_title(runs, "accuracy of each node's own model"),
        band_label="line: mean over nodes; band: min to max",
        log_x=log_x,
        styles=line_styles(runs),
    )


def plot_all(
    runs: pd.DataFrame,
    metric: str = "accuracy",
    x: str | None = None,
    *,
    logx: bool | None = None,
) -> dict[str, Figure]:
    """Every standard figure the runs have the metrics for, by file stem.

    ``metric`` against each x axis the runs record (only ``x``, if given), then the
    consensus distance and the nodes' accuracies against ``round`` (or ``x``).

    Raises
    ------
    ValueError
        If the runs do not record ``metric``, or ``x`` is unknown or not recorded.
    """
    check_axes(runs, metric, x)
    xs = list(X_AXES) if x is None else [x]
    figures = {
        f"{metric}_vs_{X_AXES[name].stem}": plot_metric(runs, metric, name, logx=logx)
        for name in xs
    }
    other_x = x or "round"
    stem = X_AXES[other_x].stem
    if metric != "consensus_distance":
        figures[f"consensus_distance_vs_{stem}"] = plot_metric(
            runs, "consensus_distance", other_x, logx=logx
        )
    figures[f"node_accuracy_vs_{stem}"] = plot_node_accuracy(runs, other_x, logx=logx)
    return {name: figure for name, figure in figures.items() if figure is not None}


def write_figures(
    runs: pd.DataFrame,
    out_dir: str | Path,
    metric: str = "accuracy",
    x: str | None = None,
    *,
    logx: bool | None = None,
    dpi: int = 120,
) -> list[Path]:
    """Write each figure of :func:`plot_all` as ``out_dir/<name>.png``; return the paths."""
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    written = []
    for name, figure in plot_all(runs, metric, x, logx=logx).items():
        path = Path(out_dir) / f"{name}.png"
        figure.savefig(path, dpi=dpi)
        written.append(path)
    return written


def _axis(x: str) -> XAxis:
    if x not in X_AXES:
        raise ValueError(f"x must be one of {', '.join(X_AXES)}; got {x!r}")
    return X_AXES[x]


def _xlabel(runs: pd.DataFrame, axis: XAxis, log_x: bool) -> str:
    """The axis label; rounds name the unit of strategies whose round is not one
    synchronous round (``round (gossip: tick)``)."""
    label = axis.label
    if axis.metric == "round" and "round_unit" in runs:
        units = runs.groupby("strategy" if "strategy" in runs else "run")["round_unit"].first()
        other = units[units.notna() & (units != "round")]
        if len(other):
            label += " (" + ", ".join(f"{name}: {unit}" for name, unit in other.items()) + ")"
    return f"{label}, log scale" if log_x else label


def _title(runs: pd.DataFrame, what: str) -> str:
    """``what``, then the settings all configurations share: a lone configuration's main
    settings and overrides, or the overrides of several."""
    labels, shared = configurations(runs)
    if labels.nunique() == 1:
        first = runs.iloc[0]
        named = [f"{key}={first[key]}" for key in TITLE_SETTINGS if pd.notna(first.get(key))]
        keys = {setting.split("=")[0] for setting in named}
        shared = " ".join([*named, *(o for o in shared.split() if o.split("=")[0] not in keys)])
    return f"{what}\n{shared}" if shared else what
