"""Tables and figures of the variance-correction study: plateau delay and ticks to target.

Reads the sweeps that ``run.sh`` writes under ``runs/`` and writes ``results/``: CSV tables
and one PNG per figure.  Gossip is scored by its nodes' mean test accuracy, FL by the
server's model; an FL round is 10 ticks (every client trains one batch per round, as the
gossip nodes do every 8-12 ticks).

Usage: python experiments/variance_correction/analyze.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

import fedsim

HERE = Path(__file__).resolve().parent
RUNS, RESULTS = HERE / "runs", HERE / "results"
TICKS_PER_FL_ROUND = 10
TARGETS = (0.2, 0.5, 0.8)  # 0.2: off the 10 % plateau
METHODS = ("FL", "gossip + VC", "gossip", "gossip, shared init")


def method(run: pd.Series) -> str:
    if run["strategy"] == "fedavg":
        return "FL"
    if run["aggregator"] == "variance_corrected":
        return "gossip + VC"
    return "gossip, shared init" if run["init"] == "same" else "gossip"


def curves(sweeps: list[Path]) -> pd.DataFrame:
    """Per run and evaluation: method, seed, partition, tick and the scored accuracy."""
    frames = []
    for sweep in sweeps:
        runs = fedsim.load_runs(sweep)
        runs = runs[runs["node"].isna()]
        settings = runs.groupby("run")[["strategy", "aggregator", "init", "partition", "seed"]]
        labels = settings.first().apply(method, axis=1)
        wide = runs.pivot_table(index=["run", "round"], columns="metric", values="value")
        wide = wide.reset_index()
        wide["method"] = wide["run"].map(labels)
        wide["seed"] = wide["run"].map(settings.first()["seed"])
        wide["partition"] = wide["run"].map(settings.first()["partition"])
        fl = wide["method"] == "FL"
        wide["tick"] = np.where(fl, wide["round"] * TICKS_PER_FL_ROUND, wide["round"])
        wide["score"] = np.where(fl, wide["accuracy"], wide["node_accuracy_mean"])
        wide["run"] = f"{sweep.parent.name}/{sweep.name}/" + wide["run"]
        frames.append(wide)
    return pd.concat(frames, ignore_index=True)


def ticks_to_targets(table: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """First evaluated tick at which each run's score reached each target; mean over seeds."""
    rows = []
    for (_run, *keys), history in table.groupby(["run", *by]):
        history = history.sort_values("tick")
        row = dict(zip(by, keys, strict=True))
        for target in TARGETS:
            reached = history.loc[history["score"] >= target, "tick"]
            row[f"ticks_to_{target}"] = reached.iloc[0] if len(reached) else np.nan
        row["final_score"] = history["score"].iloc[-1]
        row["final_tick"] = history["tick"].iloc[-1]
        rows.append(row)
    per_run = pd.DataFrame(rows)
    summary = per_run.groupby(by).agg(["mean", "count"])
    summary.columns = [f"{metric}_{stat}" for metric, stat in summary.columns]
    keep = [c for c in summary.columns if c.endswith("_mean")] + ["final_score_count"]
    return summary[keep].rename(columns={"final_score_count": "runs"}).reset_index()


def plot(table: pd.DataFrame, panels: list[tuple[str, pd.DataFrame]], path: Path) -> None:
    figure = Figure(figsize=(5.2 * len(panels), 4.2), layout="constrained")
    axes_list = np.atleast_1d(figure.subplots(1, len(panels), sharey=True))
    for axes, (title, subset) in zip(axes_list, panels, strict=True):
        for name in METHODS:
            runs = subset[subset["method"] == name]
            if runs.empty:
                continue
            mean = runs.groupby("tick")["score"].mean()
            axes.plot(mean.index, mean.values, label=name, marker=".", markersize=3)
        axes.set(title=title, xlabel="tick")
        axes.grid(alpha=0.3)
        axes.legend()
    axes_list[0].set(ylabel="mean node test accuracy (FL: global model)")
    figure.savefig(path, dpi=120)


def plot_factors(table: pd.DataFrame, path: Path) -> None:
    """The measured correction factor per tensor against ticks (gossip + VC, IID)."""
    runs = table[(table["method"] == "gossip + VC") & (table["partition"] == "iid")]
    factors = [c for c in runs.columns if c.startswith("correction_factor_")]
    figure = Figure(figsize=(6, 4), layout="constrained")
    axes = figure.subplots()
    for column in factors:
        mean = runs.groupby("tick")[column].mean().dropna()
        axes.plot(mean.index, mean.values, label=column.removeprefix("correction_factor_"))
    axes.set(xlabel="tick", ylabel="mean correction factor since the last evaluation")
    axes.set(title="LeNet-5, 50 nodes: factor per weight tensor", yscale="log")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.savefig(path, dpi=120)


def main() -> None:
    RESULTS.mkdir(exist_ok=True)
    lenet = curves(sorted((RUNS / "lenet").iterdir()))
    plot(
        lenet,
        [(f"LeNet-5, 50 nodes, {name}", lenet[lenet["partition"] == part])
         for part, name in (("iid", "IID"), ("dirichlet_per_node", "Dir(0.5)"))],
        RESULTS / "lenet_accuracy_vs_ticks.png",
    )  # fmt: skip
    plot_factors(lenet, RESULTS / "lenet_correction_factors.png")
    ticks_to_targets(lenet, ["partition", "method"]).to_csv(
        RESULTS / "lenet_ticks_to_target.csv", index=False, float_format="%.4g"
    )
    scale = curves(sorted(path for n in (RUNS / "scale").iterdir() for path in n.iterdir()))
    scale["num_nodes"] = scale["run"].str.extract(r"^n(\d+)/")[0].astype(int)
    plot(
        scale,
        [(f"MLP, {n} nodes, IID", scale[scale["num_nodes"] == n]) for n in (50, 500)],
        RESULTS / "scale_accuracy_vs_ticks.png",
    )
    ticks_to_targets(scale, ["num_nodes", "method"]).to_csv(
        RESULTS / "scale_ticks_to_target.csv", index=False, float_format="%.4g"
    )
    for path in sorted(RESULTS.glob("*.csv")):
        print(f"== {path.name}\n{pd.read_csv(path).to_string(index=False)}\n")


if __name__ == "__main__":
    main()
