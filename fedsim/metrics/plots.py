"""Curves of runs grouped into configurations, drawn with matplotlib's ``Figure`` API.

The input is the tidy frame of :func:`fedsim.metrics.report.load_runs`. Runs that differ
only in their seed (or in settings that do not change results, :data:`RUN_IDENTITY`) form
one configuration, drawn as one line: the mean over its seeds, with a band. A strategy
has the same colour in every figure (:func:`strategy_colour`). Figures are built on
:class:`matplotlib.figure.Figure` directly, so no pyplot state or GUI backend is involved
and nothing needs closing.
"""

from __future__ import annotations

import math
import textwrap
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd
from matplotlib.axes import Axes
from matplotlib.axis import Axis
from matplotlib.colors import to_hex, to_rgb
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogFormatter, MaxNLocator

RUN_IDENTITY = frozenset(
    {
        "run",
        "overrides",
        "status",
        "round_unit",
        "stopped_by",
        "seed",
        "progress",
        "resume",
        "checkpoint_every",
    }
)
"""Columns that tell apart the runs of one configuration, or do not change its results."""
TIDY_COLUMNS = frozenset({"run", "round", "metric", "value", "node"})
LINE_STYLES = ("-", "--", ":", "-.")
MANY_LINES = 6
"""Above this many lines the legend moves below the axes, in columns."""
LEGEND_CHARACTERS = 100
"""About how many characters of a small-font legend fit across a 7.5-inch figure."""
STRATEGY_COLOURS = {
    # matplotlib's ten, for the strategies compared most often
    "fedavg": "#1f77b4",
    "dpsgd": "#ff7f0e",
    "gossip": "#2ca02c",
    "s2s": "#d62728",
    "modest": "#9467bd",
    "fedprox": "#8c564b",
    "scaffold": "#e377c2",
    "choco": "#7f7f7f",
    "epidemic_learning": "#bcbd22",
    "s2a": "#17becf",
    # then hues and shades unlike those of the strategies they are compared with
    "d2": "#393b79",
    "exact_diffusion": "#e7ba52",
    "gradient_tracking": "#843c39",
    "gossip_learning": "#008080",
    "random_walk": "#e7969c",
    "single_merge": "#ce6dbd",
    "fedadam": "#000000",
    "fedyogi": "#ffbb78",
    "fedadagrad": "#a55194",
    "fedavgm": "#6b6ecf",
    "fednova": "#8c6d31",
    "fedbuff": "#637939",
    "fedasync": "#7b4173",
    "fl_fixed_server": "#9c9ede",
    "dfedsam": "#b5cf6b",
    "dadao": "#5254a3",
    "fedfix": "#bd9e39",
    "shared_seed_spsa": "#d6616b",
    "fedamd": "#31a354",
}
"""A fixed colour per strategy, the same in every figure and report."""
PALETTE = tuple(dict.fromkeys(STRATEGY_COLOURS.values()))
GROUPED_BY = "strategy"
"""The setting whose value picks a line's colour."""


def strategy_colour(strategy: object, position: int = 0) -> str:
    """The colour of ``strategy`` in every figure: :data:`STRATEGY_COLOURS`, else one of
    its colours picked by a stable hash of the name (CRC-32, not Python's salted hash);
    a run that records no strategy gets the ``position``-th colour."""
    if not isinstance(strategy, str) or not strategy:
        return PALETTE[position % len(PALETTE)]
    if strategy in STRATEGY_COLOURS:
        return STRATEGY_COLOURS[strategy]
    return PALETTE[zlib.crc32(strategy.encode()) % len(PALETTE)]


def line_styles(runs: pd.DataFrame) -> dict[str, tuple[str, str]]:
    """Each configuration's ``(colour, line style)``: its strategy's colour, and, for the
    k-th configuration of one strategy, a lighter shade and the k-th line style."""
    labels, _ = configurations(runs)
    if GROUPED_BY in runs:
        strategies = runs.groupby("run", sort=False)[GROUPED_BY].first().reindex(labels.index)
    else:
        strategies = pd.Series(None, index=labels.index, dtype="object")
    first = pd.DataFrame({"label": labels, "strategy": strategies}).drop_duplicates("label")
    counts = first["strategy"].value_counts()
    seen: dict[str, int] = {}
    styles: dict[str, tuple[str, str]] = {}
    for position, (label, strategy) in enumerate(first.itertuples(index=False)):
        rank, total = 0, 1
        if isinstance(strategy, str):
            rank, total = seen.get(strategy, 0), counts[strategy]
            seen[strategy] = rank + 1
        base = strategy_colour(strategy, position)
        styles[label] = (_lighter(base, rank / total), LINE_STYLES[rank % len(LINE_STYLES)])
    return styles


def _lighter(colour: str, amount: float) -> str:
    """``colour`` mixed with white: 0 keeps it, 1 would be white (at most 0.6 is used)."""
    red, green, blue = (c + (1 - c) * 0.6 * amount for c in to_rgb(colour))
    return to_hex((red, green, blue))


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
    seeds left out; a configuration without any, by its run names; a lone configuration,
    by its strategy, its overrides being the shared ones. A configuration with a run whose
    ``status`` is not ``completed`` says so: ``strategy=gossip (interrupted)``.
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
    names = pd.Series(per_run.index, index=per_run.index).groupby(config_ids).agg(", ".join)
    if len(first_runs) == 1:  # the settings go into the title, the legend names the strategy
        strategies = runs[GROUPED_BY].dropna() if GROUPED_BY in runs else pd.Series()
        short = str(strategies.iloc[0]) if len(strategies) else names.iloc[0]
        labels, shared = pd.Series([short], index=first_runs.to_numpy()), seedless.iloc[0]
    else:
        labels, shared = distinguishing(seedless.set_axis(first_runs.to_numpy()))
        labels = labels.where(labels != "", names)
        if labels.duplicated().any():  # configurations that no override tells apart
            labels = labels + " [" + names + "]"
    if "status" in runs:  # an unfinished run must not pass for a finished one
        statuses = runs.groupby("run", sort=False)["status"].first().reindex(per_run.index)
        unfinished = (
            statuses[statuses != "completed"]
            .groupby(config_ids)
            .agg(lambda found: ", ".join(sorted(set(found))))
        )
        suffix = pd.Series("", index=labels.index)
        suffix[unfinished.index] = " (" + unfinished + ")"
        labels = labels + suffix
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
    log_x: bool = False,
    log_y: bool = False,
    styles: Mapping[str, tuple[str, str]] | None = None,
) -> Figure:
    """A figure with one line per configuration of ``table`` (from :func:`curves`) and its band.

    ``styles`` maps a configuration to its ``(colour, line style)`` (:func:`line_styles`;
    default: matplotlib's cycle). ``band_label`` titles the legend; where some configuration
    has several seeds, the title says so ("mean ± std over 3 seeds" without ``band_label``).
    Points at or below 0 are left out of a log axis, and its label says so.
    """
    table, xlabel, ylabel = _drop_non_positive(table, xlabel, ylabel, log_x, log_y)
    figure = Figure(figsize=(7.5, 4.5), layout="constrained")
    axes = figure.subplots()
    for index, (label, curve) in enumerate(table.groupby("configuration", sort=False)):
        colour, style = (styles or {}).get(
            label, (f"C{index % 10}", LINE_STYLES[index // 10 % len(LINE_STYLES)])
        )
        _draw_line(axes, curve, colour, style, label)
    _decorate(axes, xlabel, ylabel, log_x, log_y)
    axes.set_title(_wrap(title), fontsize="medium")
    band_label = _over_seeds(table, band_label)
    if table["configuration"].nunique() > MANY_LINES:
        _legend_below(figure, axes, band_label)
    else:
        axes.legend(fontsize="small", title=band_label, title_fontsize="small")
    return figure


def _legend_below(figure: Figure, axes: Axes, title: str | None) -> None:
    """The legend under the axes, in as many columns as its labels fit (labels too long
    for one are wrapped), the figure taller by its rows: never wider than the figure."""
    handles, labels = axes.get_legend_handles_labels()
    columns = 2 if max(map(len, labels)) <= LEGEND_CHARACTERS // 2 - 6 else 1
    width = LEGEND_CHARACTERS // columns - 6
    labels = ["\n".join(textwrap.wrap(label, width)) for label in labels]
    lines = sum(label.count("\n") + 1 for label in labels) / columns
    figure.set_figheight(figure.get_figheight() + 0.2 * lines)
    figure.legend(
        handles,
        labels,
        loc="outside lower center",
        ncols=columns,
        fontsize="small",
        title=title,
        title_fontsize="small",
    )


def draw_panels(
    table: pd.DataFrame,
    *,
    xlabel: str,
    ylabel: str,
    title: str,
    band_label: str,
    log_x: bool = False,
    styles: Mapping[str, tuple[str, str]] | None = None,
) -> Figure:
    """One panel per configuration of ``table`` (from :func:`curves`), sharing both axes:
    bands that would hide each other in one panel are read side by side."""
    table, xlabel, ylabel = _drop_non_positive(table, xlabel, ylabel, log_x, False)
    groups = list(table.groupby("configuration", sort=False))
    columns = min(len(groups), 3)
    rows = math.ceil(len(groups) / columns)
    width = max(7.5, 3.6 * columns + 0.8)
    figure = Figure(figsize=(width, 2.6 * rows + 1.4), layout="constrained")
    grid = figure.subplots(rows, columns, sharex=True, sharey=True, squeeze=False)
    for index, (axes, (label, curve)) in enumerate(zip(grid.flat, groups, strict=False)):
        colour, _ = (styles or {}).get(label, (f"C{index % 10}", "-"))
        _draw_line(axes, curve, colour, "-", label)
        axes.set_title("\n".join(textwrap.wrap(str(label), 40)), fontsize="small")
        _decorate(axes, "", "", log_x, False)
    for index in range(len(groups), rows * columns):
        grid.flat[index].set_visible(False)
        # the panel above is now the lowest of its column: it shows the x tick labels
        grid.flat[index - columns].xaxis.set_tick_params(labelbottom=True)
    figure.supxlabel(xlabel, fontsize="medium")
    figure.supylabel(ylabel, fontsize="medium")
    suptitle = _wrap(f"{title}\n{_over_seeds(table, band_label)}", width=int(width * 10.5))
    figure.suptitle(suptitle, fontsize="medium")
    return figure


def _draw_line(axes: Axes, curve: pd.DataFrame, colour: str, style: str, label: str) -> None:
    curve = curve.sort_values("round", kind="stable")
    axes.plot(curve["x"], curve["y"], style, color=colour, marker=".", label=label)
    if curve[["lower", "upper"]].notna().all(axis=1).any():
        axes.fill_between(
            curve["x"], curve["lower"], curve["upper"], color=colour, alpha=0.2, linewidth=0
        )


def _decorate(axes: Axes, xlabel: str, ylabel: str, log_x: bool, log_y: bool) -> None:
    if xlabel == "round":
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    if log_x:
        axes.set_xscale("log")
        _plain_ticks(axes.xaxis)
    if log_y:
        axes.set_yscale("log")
        _plain_ticks(axes.yaxis)
    axes.set(xlabel=xlabel, ylabel=ylabel)
    axes.grid(alpha=0.3)


def _plain_ticks(axis: Axis) -> None:
    """Tick labels of a log axis as plain numbers (20, 0.5, not 2x10^1); minor ticks are
    labelled where the axis spans few decades, as matplotlib decides when drawing."""
    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))  # 0.01, 100
    axis.set_minor_formatter(LogFormatter(labelOnlyBase=False))


def _drop_non_positive(
    table: pd.DataFrame, xlabel: str, ylabel: str, log_x: bool, log_y: bool
) -> tuple[pd.DataFrame, str, str]:
    """``table`` without the points a log axis has no place for (0 bytes in round 0, equal
    models), and the axis labels saying what was left out."""
    if log_x and (table["x"] <= 0).any():
        table = table[table["x"] > 0]
        xlabel = f"{xlabel}; 0 not drawn"
    if log_y and (table["y"] <= 0).any():
        table = table.copy()
        table.loc[table["y"] <= 0, ["y", "lower", "upper"]] = float("nan")
        ylabel = f"{ylabel}; 0 not drawn"
    return table, xlabel, ylabel


def _wrap(title: str, width: int = 80) -> str:
    """``title`` in lines of at most ``width`` characters (80 fit a 7.5-inch figure)."""
    return "\n".join(textwrap.fill(line, width=width) for line in title.splitlines())


def _over_seeds(table: pd.DataFrame, band_label: str | None) -> str | None:
    seeds = table["seeds"].max()
    if seeds <= 1:
        return band_label
    over_seeds = f"over {seeds} seeds" if table["seeds"].min() == seeds else "over seeds"
    return f"{band_label}; mean {over_seeds}" if band_label else f"mean ± std {over_seeds}"


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
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
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
