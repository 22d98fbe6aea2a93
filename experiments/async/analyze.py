"""Tables and figures of the asynchronous-FL study: who reaches a target accuracy first in
simulated seconds, synchronous or asynchronous, as client speeds spread.

Reads the sweeps that ``run.sh`` writes under ``runs/`` and writes ``results/``:
``results.csv`` (one row per run: strategy, sigma, seed, server updates, client updates
applied and dropped, mean staleness, final accuracy, and the simulated seconds and server
updates to each target), ``time_to_target.md`` (mean over seeds, with how many of the 3
seeds reached it), ``accuracy_vs_time.png`` (accuracy against simulated seconds, one panel
per spread, mean of the seeds) and ``staleness.csv`` (the applied updates' staleness
histogram of the asynchronous runs, summed over seeds).

Usage: python experiments/async/analyze.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

import fedsim
from fedsim.strategies.asynchronous import BIN_NAMES

HERE = Path(__file__).resolve().parent
RUNS, RESULTS = HERE / "runs", HERE / "results"
STRATEGIES = {
    "fedavg": "FedAvg, wait for all",
    "fedavg_over_selection": "FedAvg, over-selection 1.3",
    "fedavg_deadline": "FedAvg, deadline 2 s",
    "fedasync": "FedAsync",
    "fedbuff": "FedBuff",
}
STYLES = {
    "fedavg": "-",
    "fedavg_over_selection": "--",
    "fedavg_deadline": ":",
    "fedasync": "-",
    "fedbuff": "-",
}
TARGETS = (0.80, 0.90)
HORIZON_S = 300.0
SIGMA = "network.compute_sigma"
COUNTERS = ("updates_applied", "updates_dropped", "staleness_mean", "staleness_max")


def curves() -> pd.DataFrame:
    """Per run and evaluation: accuracy, simulated time and the counters, wide."""
    frames = []
    for key in STRATEGIES:
        rows = fedsim.load_runs(RUNS / key)
        rows = rows[rows["node"].isna()]
        wide = rows.pivot_table(
            index=["run", SIGMA, "seed", "round"], columns="metric", values="value"
        ).reset_index()
        frames.append(wide.assign(strategy=key))
    return pd.concat(frames, ignore_index=True)


def first_reaching(run: pd.DataFrame, target: float) -> tuple[float, float]:
    """Simulated seconds and server updates at the first evaluation at or above ``target``
    (NaN when the run never gets there)."""
    reached = run[run["accuracy"] >= target]
    if reached.empty:
        return np.nan, np.nan
    first = reached.iloc[0]
    return float(first["sim_time_s"]), float(first["round"])


def per_run(evaluations: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for (strategy, sigma, seed), run in evaluations.groupby(["strategy", SIGMA, "seed"]):
        run = run.sort_values("round")
        last = run.iloc[-1]
        row = {
            "strategy": strategy,
            "sigma": sigma,
            "seed": int(seed),
            "server_updates": int(last["round"]),
            "sim_time_s": last["sim_time_s"],
            "final_accuracy": last["accuracy"],
            "best_accuracy": run["accuracy"].max(),
        }
        row.update({name: last.get(name, np.nan) for name in COUNTERS})
        for target in TARGETS:
            seconds, updates = first_reaching(run, target)
            row[f"seconds_to_{target:.2f}"] = seconds
            row[f"updates_to_{target:.2f}"] = updates
        rows.append(row)
    return pd.DataFrame(rows)


def time_to_target_table(results: pd.DataFrame) -> str:
    """Strategies by spreads: mean simulated seconds to each target over the seeds that
    reached it (how many of them did), and the speed-up of FedBuff over wait-for-all."""
    sigmas = sorted(results["sigma"].unique())
    lines = []
    for target in TARGETS:
        column = f"seconds_to_{target:.2f}"
        lines += [
            f"Simulated seconds to {target:.0%} test accuracy (mean over the seeds that reached "
            f"it within {HORIZON_S:.0f} s; reached/3):",
            "",
            "| strategy | " + " | ".join(f"sigma {s}" for s in sigmas) + " |",
            "|---" * (len(sigmas) + 1) + "|",
        ]
        for key, name in STRATEGIES.items():
            cells = []
            for sigma in sigmas:
                values = results[(results["strategy"] == key) & (results["sigma"] == sigma)][column]
                reached = values.dropna()
                mean = f"{reached.mean():.0f}" if len(reached) else "-"
                cells.append(f"{mean} ({len(reached)}/{len(values)})")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        speedups = []
        for sigma in sigmas:
            at = results[results["sigma"] == sigma]
            sync = at[at["strategy"] == "fedavg"][column]
            buff = at[at["strategy"] == "fedbuff"][column]
            ratio = sync.mean() / buff.mean() if sync.notna().all() and buff.notna().all() else None
            speedups.append(f"{ratio:.1f}x" if ratio else "-")
        lines += [
            "| FedBuff's speed-up over wait-for-all | " + " | ".join(speedups) + " |",
            "",
        ]
    return "\n".join(lines)


def end_of_budget_table(results: pd.DataFrame) -> str:
    """Server updates, client updates applied and dropped, staleness and final accuracy."""
    columns = ["server_updates", "updates_applied", "updates_dropped", "staleness_mean"]
    columns += ["final_accuracy"]
    means = results.groupby(["sigma", "strategy"], observed=True)[columns].mean()
    lines = [
        "| sigma | strategy | " + " | ".join(columns) + " |",
        "|---" * (len(columns) + 2) + "|",
    ]
    for (sigma, strategy), row in means.iterrows():
        cells = [_number(row[c], 0) for c in columns[:3]] + [
            _number(row[c], 2) for c in columns[3:]
        ]
        lines.append(f"| {sigma} | {STRATEGIES[strategy]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _number(value: float, digits: int) -> str:
    """``value`` rounded, or "-" where the strategy does not count it."""
    return "-" if pd.isna(value) else f"{value:.{digits}f}"


def plot(evaluations: pd.DataFrame, path: Path) -> None:
    sigmas = sorted(evaluations[SIGMA].unique())
    figure = Figure(figsize=(4.4 * len(sigmas), 3.9), layout="constrained")
    axes_list = figure.subplots(1, len(sigmas), sharey=True)
    grid = np.linspace(0, HORIZON_S, 301)
    for axes, sigma in zip(axes_list, sigmas, strict=True):
        for key, name in STRATEGIES.items():
            runs = evaluations[(evaluations["strategy"] == key) & (evaluations[SIGMA] == sigma)]
            interpolated = [
                np.interp(grid, run["sim_time_s"], run["accuracy"], right=np.nan)
                for _, run in runs.sort_values("round").groupby("seed")
            ]
            axes.plot(grid, np.nanmean(interpolated, axis=0), STYLES[key], label=name)
        for target in TARGETS:
            axes.axhline(target, color="grey", linewidth=0.6, alpha=0.5)
        axes.set(title=f"compute speed spread sigma = {sigma}", xlabel="simulated seconds")
        axes.grid(alpha=0.3)
    axes_list[0].set(ylabel="test accuracy (server model), mean of 3 seeds", ylim=(0, 1))
    axes_list[-1].legend(loc="lower right", fontsize=8)
    figure.savefig(path, dpi=120)


def staleness_histogram(evaluations: pd.DataFrame) -> pd.DataFrame:
    """The applied updates' staleness histogram at the end of each asynchronous run, summed
    over seeds, per strategy and spread."""
    bins = list(BIN_NAMES)
    last = evaluations.sort_values("round").groupby(["strategy", SIGMA, "seed"]).tail(1)
    last = last[last["strategy"].isin(["fedasync", "fedbuff"])]
    table = last.groupby(["strategy", SIGMA])[bins].sum().astype(int)
    return table.reset_index().rename(columns={SIGMA: "sigma"})


def main() -> None:
    RESULTS.mkdir(exist_ok=True)
    evaluations = curves()
    results = per_run(evaluations)
    results["strategy"] = pd.Categorical(results["strategy"], list(STRATEGIES))
    results = results.sort_values(["sigma", "strategy", "seed"])
    results.to_csv(RESULTS / "results.csv", index=False, float_format="%.4f")
    table = time_to_target_table(results)
    (RESULTS / "time_to_target.md").write_text(
        table
        + "\nPer spread and strategy, mean over seeds at the end of the 300 s budget:\n\n"
        + end_of_budget_table(results)
        + "\n"
    )
    plot(evaluations, RESULTS / "accuracy_vs_time.png")
    staleness_histogram(evaluations).to_csv(RESULTS / "staleness.csv", index=False)
    print((RESULTS / "time_to_target.md").read_text())


if __name__ == "__main__":
    main()
