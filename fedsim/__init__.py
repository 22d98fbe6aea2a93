"""fedsim: fast, reproducible simulation of federated, decentralized and semi-decentralized
learning.

The analysis API, for notebooks and scripts (``fedsim report`` on the command line)::

    runs = fedsim.load_runs("runs/sweep_a", "runs/sweep_b")   # tidy metric rows
    summary = fedsim.summarize(runs, target=0.8)                # one row per run
    fedsim.aggregate_seeds(summary)                             # one row per configuration
    fedsim.plot_metric(runs, "accuracy", x="bytes")             # a matplotlib Figure
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what type checkers and editors see; at run time, __getattr__ imports
    from fedsim.metrics.figures import X_AXES, plot_all, plot_metric, plot_node_accuracy
    from fedsim.metrics.report import load_runs, report, run_status
    from fedsim.metrics.tables import aggregate_seeds, reach_target, summarize

__all__ = [
    "X_AXES",
    "aggregate_seeds",
    "load_runs",
    "plot_all",
    "plot_metric",
    "plot_node_accuracy",
    "reach_target",
    "report",
    "run_status",
    "summarize",
]
__version__ = "0.1.0"

_HOMES = {
    "X_AXES": "fedsim.metrics.figures",
    "aggregate_seeds": "fedsim.metrics.tables",
    "load_runs": "fedsim.metrics.report",
    "plot_all": "fedsim.metrics.figures",
    "plot_metric": "fedsim.metrics.figures",
    "plot_node_accuracy": "fedsim.metrics.figures",
    "reach_target": "fedsim.metrics.tables",
    "report": "fedsim.metrics.report",
    "run_status": "fedsim.metrics.report",
    "summarize": "fedsim.metrics.tables",
}
"""Public name -> the module defining it, imported on first use."""


def __getattr__(name: str) -> Any:
    # pandas and matplotlib load only when the analysis API is used: `fedsim run` starts faster.
    if name not in _HOMES:
        raise AttributeError(f"module 'fedsim' has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOMES[name]), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*__all__, "__version__"})
