"""The standard figures of a run or a sweep: accuracy per round, byte and simulated second,
consensus distance, and the spread of the nodes' own accuracies.

Each figure has one line per configuration (the mean over its seeds, with a band); see
:mod:`fedsim.metrics.plots`. In a notebook, ``draw_figure(runs, name)`` returns the figure
to show; ``fedsim report`` writes them all with :func:`write_figures`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from fedsim.metrics.plots import configurations, curves, draw_curves

ACCURACY = "test accuracy (fraction correct)"


@dataclass(frozen=True)
class FigureSpec:
    """What one standard figure draws: aggregate metric ``y`` against ``round`` or metric ``x``."""

    y: str
    title: str
    ylabel: str = ACCURACY
    x: str = "round"
    xlabel: str = "round"
    x_scale: float = 1.0
    log_y: bool = False
    band: tuple[str, str] | None = None
    """Two metrics bounding the band, instead of +- one standard deviation over seeds."""
    band_label: str | None = None


STANDARD_FIGURES: dict[str, FigureSpec] = {
    "accuracy_vs_round": FigureSpec("accuracy", "accuracy per round"),
    "accuracy_vs_bytes": FigureSpec(
        "accuracy",
        "accuracy per byte sent",
        x="bytes_sent_total",
        xlabel="bytes sent by all nodes (MB)",
        x_scale=1e-6,
    ),
    "accuracy_vs_sim_time": FigureSpec(
        "accuracy", "accuracy per simulated second", x="sim_time_s", xlabel="simulated time (s)"
    ),
    "consensus_distance_vs_round": FigureSpec(
        "consensus_distance",
        "consensus distance: mean squared distance of node models to their average",
        ylabel="consensus distance (log scale)",
        log_y=True,
    ),
    "node_accuracy_vs_round": FigureSpec(
        "node_accuracy_mean",
        "accuracy of each node's own model",
        ylabel="node accuracy (fraction correct)",
        band=("node_accuracy_min", "node_accuracy_max"),
        band_label="line: mean over nodes; band: min to max",
    ),
}
"""Figure name (also the PNG's file stem) -> what it draws."""


def draw_figure(runs: pd.DataFrame, name: str) -> Figure | None:
    """The standard figure ``name`` of the runs in ``runs`` (tidy, from ``load_runs``).

    Returns
    -------
    matplotlib.figure.Figure or None
        None when the runs did not record the figure's metrics (``sim_time_s``, say).

    Raises
    ------
    ValueError
        If ``name`` is not a key of :data:`STANDARD_FIGURES`.
    """
    if name not in STANDARD_FIGURES:
        raise ValueError(f"figure must be one of {sorted(STANDARD_FIGURES)}, got {name!r}")
    spec = STANDARD_FIGURES[name]
    table = curves(runs, spec.y, spec.x, spec.band)
    if table.empty:
        return None
    table["x"] = table["x"] * spec.x_scale
    _, shared = configurations(runs)
    return draw_curves(
        table,
        xlabel=spec.xlabel,
        ylabel=spec.ylabel,
        title=f"{spec.title}\n{shared}" if shared else spec.title,
        band_label=spec.band_label,
        log_y=spec.log_y,
    )


def write_figures(runs: pd.DataFrame, out_dir: str | Path, dpi: int = 120) -> list[Path]:
    """Write each standard figure whose metrics were recorded as ``out_dir/<name>.png``.

    Returns the paths written, in the order of :data:`STANDARD_FIGURES`.
    """
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    written = []
    for name in STANDARD_FIGURES:
        figure = draw_figure(runs, name)
        if figure is not None:
            path = Path(out_dir) / f"{name}.png"
            figure.savefig(path, dpi=dpi)
            written.append(path)
    return written
