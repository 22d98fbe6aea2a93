"""Tables of the DADAO study (``run.sh``): reads ``results/linear_decay.csv`` and the two digits
runs under ``runs/``, writes ``results/digits.csv`` and ``results/summary.md``.

- linear decay: the slope of log distance against simulated time (a least-squares line over
  the run), and the gradient events (all nodes) to bring the distance to 1e-2 of its start
  (log-linear interpolation between rounds), for L/mu = 8 and 32: sqrt(L/mu) doubles, so
  the paper's O(n sqrt(L/mu) log(1/eps)) gradients predict about twice as many;
- digits: accuracy, loss and consensus distance of DADAO and D-PSGD at equal bytes, and the
  final (1/n) sum_i |x_i - x*|^2 from each run's last checkpoint, x* of the regularised
  objective by Newton's method on the same node data (``linear_decay.optimum``).

Usage: python experiments/seed_wave_2/dadao/analyze.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml
from linear_decay import build, node_losses, optimum

import fedsim
from fedsim.metrics.tables import markdown_table

HERE = Path(__file__).resolve().parent
RUNS, RESULTS = HERE / "runs", HERE / "results"
PRECISION = 1e-2  # of the starting distance
DIGITS = {"digits_dadao": "DADAO", "digits_dpsgd": "D-PSGD"}
DIGITS_L2 = (0.1, 0.5)  # run.sh's l2 values
BYTE_LEVELS = (3e6, 6e6, 12.1e6)
METRICS = ("bytes_sent_total", "sim_time_s", "accuracy", "loss", "consensus_distance")


def to_precision(run: pd.DataFrame) -> float:
    """Gradient events until the distance first falls to PRECISION of its start (log-linear
    interpolation between rounds); nan if it never does."""
    target = np.log(PRECISION * run.distance.iloc[0])
    logs, events = np.log(run.distance.to_numpy()), run.gradient_events.to_numpy()
    below = np.flatnonzero(logs <= target)
    if not len(below):
        return float("nan")
    k = below[0]
    share = (logs[k - 1] - target) / (logs[k - 1] - logs[k])
    return float(events[k - 1] + share * (events[k] - events[k - 1]))


def decay_table(table: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for (condition, rate), run in table.groupby(["condition", "communication_rate"], sort=False):
        finite = run[np.isfinite(run.distance) & (run.distance > 0)]
        slope = np.polyfit(finite.time, np.log(finite.distance), 1)[0]
        rows.append(
            {
                "L/mu": condition,
                "communication rate": round(rate, 2),
                "slope of log distance per unit time": round(slope, 4),
                "distance at start": f"{run.distance.iloc[0]:.3g}",
                "distance at end": f"{run.distance.iloc[-1]:.3g}",
                "time": run.time.iloc[-1],
                f"gradient events to {PRECISION:g}": to_precision(run),
                "floats sent per unit time": round(run.floats_sent.iloc[-1] / run.time.iloc[-1]),
            }
        )
    return pd.DataFrame(rows)


def digits_runs() -> list[tuple[str, float, Path]]:
    """(strategy, l2, run directory) of every digits run."""
    return [(name, l2, RUNS / f"{key}_l2_{l2}") for l2 in DIGITS_L2 for key, name in DIGITS.items()]


def digits_table() -> pd.DataFrame:
    frames = []
    for name, l2, run in digits_runs():
        rows = fedsim.load_runs(run)
        rows = rows[rows["node"].isna() & rows.metric.isin(METRICS)]
        wide = rows.pivot_table(index="round", columns="metric", values="value").reset_index()
        frames.append(wide.assign(strategy=name, l2=l2))
    return pd.concat(frames, ignore_index=True)


def final_distances() -> dict[tuple[str, float], float]:
    """(1/n) sum_i |x_i - x*|^2 of every digits run's last checkpoint."""
    distances, targets = {}, {}
    for name, l2, run in digits_runs():
        overrides = yaml.safe_load((run / ".hydra" / "overrides.yaml").read_text())
        simulation = build(*overrides, common=("progress=false",))
        num_nodes, size = simulation.federation.num_nodes, simulation.task.layout.size
        if l2 not in targets:  # the same node data in every run
            loss, _ = node_losses(simulation)
            targets[l2] = optimum(loss, num_nodes, size, l2)
        state = torch.load(run / "checkpoint.pt", weights_only=False)
        params = state["backend"]["params"][:num_nodes].double()
        distances[name, l2] = float((params - targets[l2]).square().sum() / num_nodes)
    return distances


def at_bytes(digits: pd.DataFrame) -> pd.DataFrame:
    """Each run's last evaluation at or below each of BYTE_LEVELS bytes sent."""
    rows = []
    for (l2, strategy), run in digits.groupby(["l2", "strategy"], sort=True):
        for level in BYTE_LEVELS:
            below = run[run.bytes_sent_total <= level].sort_values("round").iloc[-1]
            rows.append(
                {
                    "l2": l2, "strategy": strategy, "MB": level / 1e6,
                    "accuracy": below.accuracy, "loss": below.loss,
                    "consensus_distance": below.consensus_distance,
                }
            )  # fmt: skip
    return pd.DataFrame(rows)


def significant(table: pd.DataFrame) -> pd.DataFrame:
    """Every float as text with 4 significant digits (distances span 1e-3 to 1e34)."""
    return table.map(lambda value: f"{value:.4g}" if isinstance(value, float) else value)


def main() -> None:
    torch.set_num_threads(1)
    decay = pd.read_csv(RESULTS / "linear_decay.csv")
    digits = digits_table()
    digits.to_csv(RESULTS / "digits.csv", index=False)
    last = digits.sort_values("round").groupby(["l2", "strategy"], sort=False).tail(1)
    distances = final_distances()
    last = last.assign(
        distance_to_optimum=[distances[s, l2] for s, l2 in zip(last.strategy, last.l2, strict=True)]
    ).sort_values(["l2", "strategy"])
    lines = [
        "# DADAO: measured",
        "",
        "## Distance to x* (L2-regularised logistic regression, LEAF synthetic features)",
        "",
        markdown_table(significant(decay_table(decay))),
        "",
        "## Digits at equal bytes",
        "",
        markdown_table(significant(at_bytes(digits))),
        "",
        "Final evaluation of each run:",
        "",
        markdown_table(
            significant(last[["l2", "strategy", "round", *METRICS, "distance_to_optimum"]])
        ),
        "",
    ]
    (RESULTS / "summary.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
