"""Tables and figures of the MoDeST study: convergence, communication to a target, churn.

Reads the sweeps that ``run.sh`` writes under ``runs/`` and writes ``results/``: CSV tables
and one PNG per figure.  Every number is a mean over seeds (std beside it).

Usage: python experiments/modest/analyze.py
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

import fedsim
from fedsim.simulated.churn import schedule

HERE = Path(__file__).resolve().parent
RUNS, RESULTS = HERE / "runs", HERE / "results"
LABELS = {
    "modest": "MoDeST",
    "fl_fixed_server": "FL (fixed server)",
    "dpsgd": "D-PSGD (one-peer exp.)",
    "gossip_learning": "Gossip learning",
}
TARGETS = {"digits": 0.85, "synthetic": 0.60}
# How the MoDeST paper's code scores each strategy: the aggregated model of MoDeST and FL,
# the mean of the nodes' own models ("individual") of decentralized learning.
DECENTRALIZED = ("dpsgd", "gossip_learning")
EVALUATIONS = {"paper": "paper_accuracy", "averaged": "accuracy"}
CRASHES_DONE_S = 1200.0  # the last crash batch of the paper's crash run


def aggregates(sweep: Path) -> pd.DataFrame:
    """One row per (run, evaluated round): the run's settings and its aggregate metrics."""
    runs = fedsim.load_runs(sweep)
    runs = runs[runs["node"].isna()].assign(run=lambda rows: f"{sweep.name}/" + rows["run"])
    table = runs.pivot_table(
        index=["run", "strategy", "seed", "round"], columns="metric", values="value"
    ).reset_index()
    decentralized = table["strategy"].isin(DECENTRALIZED)
    table["paper_accuracy"] = table["accuracy"].where(~decentralized, table["node_accuracy_mean"])
    return table


def first_reaching(runs: pd.DataFrame, target: float, column: str = "accuracy") -> pd.DataFrame:
    """Per run: round, simulated seconds and bytes when ``column`` first reached ``target``."""
    rows = []
    for (_, strategy, seed), history in runs.groupby(["run", "strategy", "seed"]):
        reached = history[history[column] >= target].sort_values("round")
        first = reached.iloc[0] if len(reached) else None
        rows.append(
            {
                "strategy": strategy,
                "seed": seed,
                "round": np.nan if first is None else first["round"],
                "sim_time_s": np.nan if first is None else first["sim_time_s"],
                "bytes_total": np.nan if first is None else first["bytes_sent_total"],
                "bytes_model": np.nan if first is None else first["bytes_model_total"],
                "bytes_control": np.nan if first is None else first["bytes_control_total"],
            }
        )
    return pd.DataFrame(rows)


def mean_std(table: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    numbers = table.drop(columns=["seed"]).groupby(by).agg(["mean", "std"])
    numbers.columns = [f"{metric}_{stat}" for metric, stat in numbers.columns]
    return numbers.reset_index()


def convergence(digits: pd.DataFrame) -> pd.DataFrame:
    """(a): final accuracy and time and bytes to the digits target, per strategy, scored as
    the paper does (``evaluation=paper``) and by the global / averaged model."""
    tables = []
    for evaluation, column in EVALUATIONS.items():
        last = digits.sort_values("round").groupby("run").tail(1)
        final = last[["strategy", "seed", "round", "sim_time_s", column]].rename(
            columns={"round": "rounds", column: "final_accuracy", "sim_time_s": "final_sim_s"}
        )
        reach = first_reaching(digits, TARGETS["digits"], column).add_suffix("_to_target")
        reach = reach.rename(columns={"strategy_to_target": "strategy", "seed_to_target": "seed"})
        table = mean_std(final.merge(reach, on=["strategy", "seed"]), ["strategy"])
        tables.append(table.assign(evaluation=evaluation))
    return pd.concat(tables)


def plot_convergence(digits: pd.DataFrame) -> None:
    figure = Figure(figsize=(11, 4.2), layout="constrained")
    by_round, by_time = figure.subplots(1, 2)
    for strategy, runs in digits.groupby("strategy"):
        mean = runs.groupby("round")[["paper_accuracy", "sim_time_s"]].mean()
        style = {
            "label": LABELS[strategy],
            "color": f"C{list(LABELS).index(strategy)}",  # one colour per strategy everywhere
            "linestyle": "--" if strategy.startswith("fl") else "-",
        }
        if strategy != "gossip_learning":  # its rounds are gossip periods, not sample rounds
            by_round.plot(mean.index, mean["paper_accuracy"], **style)
        by_time.plot(mean["sim_time_s"], mean["paper_accuracy"], **style)
    by_round.set(xlabel="round", ylabel="test accuracy, as the paper scores it")
    by_time.set(xlabel="simulated time (s)", ylabel="test accuracy", xlim=(0, 650))
    for axes in (by_round, by_time):
        axes.grid(alpha=0.3)
        axes.legend()
    figure.suptitle(
        "(a) digits, 100 nodes, Dir(1): mean of 3 seeds; MoDeST, FL: aggregated model; "
        "D-PSGD, gossip: mean of the nodes' own models"
    )
    figure.savefig(RESULTS / "a_accuracy_vs_round_and_time.png", dpi=120)


def communication() -> pd.DataFrame:
    """(b): bytes to the target accuracy, MoDeST vs D-PSGD, on both data sets."""
    tables = []
    for data, target in TARGETS.items():
        runs = pd.concat(aggregates(sweep) for sweep in sorted((RUNS / data).iterdir()))
        runs = runs[runs["strategy"].isin(["modest", "dpsgd"])]
        for evaluation, column in EVALUATIONS.items():
            reach = mean_std(first_reaching(runs, target, column), ["strategy"])
            tables.append(reach.assign(data=data, target=target, evaluation=evaluation))
    table = pd.concat(tables)
    ratio = table.pivot(index=["data", "evaluation"], columns="strategy", values="bytes_total_mean")
    keys = pd.MultiIndex.from_frame(table[["data", "evaluation"]])
    table["dpsgd_over_modest_bytes"] = (ratio["dpsgd"] / ratio["modest"]).reindex(keys).to_numpy()
    return table


def churn_crash() -> pd.DataFrame:
    """(c): per crash run: how far it got, and whether accuracy rose after all crashes."""
    rows = []
    for variant in ("crash_v1", "crash_robust"):
        for run, history in aggregates(RUNS / "churn" / variant).groupby("run"):
            run_dir = RUNS / "churn" / run
            summary = json.loads((run_dir / "summary.json").read_text())
            history = history.sort_values("round")
            before = history[history["sim_time_s"] <= CRASHES_DONE_S]
            after = history[history["sim_time_s"] > CRASHES_DONE_S]
            rows.append(
                {
                    "variant": variant,
                    "seed": int(history["seed"].iloc[0]),
                    "status": summary["status"],
                    "rounds_completed": summary["rounds_completed"],
                    "last_sim_time_s": history["sim_time_s"].iloc[-1],
                    "accuracy_at_1200s": before["accuracy"].iloc[-1],
                    "rounds_after_1200s": (
                        int(after["round"].iloc[-1] - before["round"].iloc[-1]) if len(after) else 0
                    ),
                    "final_accuracy": history["accuracy"].iloc[-1],
                }
            )
    return pd.DataFrame(rows)


def plot_crash() -> None:
    figure = Figure(figsize=(11, 4.2), layout="constrained")
    panels = figure.subplots(1, 2, sharey=True)
    churn = schedule(100, 0, crash_count=5)
    times = np.linspace(0, 2500, 501)
    alive = [churn.alive(time).sum() for time in times]
    for axes, variant, title in zip(
        panels,
        ("crash_v1", "crash_robust"),
        ("v1 (a = 1, no aggregation timeout)", "a = 2, aggregation timeout 10 s"),
        strict=True,
    ):
        for _, history in aggregates(RUNS / "churn" / variant).groupby("run"):
            history = history.sort_values("round")
            label = f"seed {int(history['seed'].iloc[0])}"
            axes.plot(history["sim_time_s"], history["accuracy"], label=label)
        nodes = axes.twinx()
        nodes.plot(times, alive, color="grey", linestyle=":", label="nodes up")
        nodes.set(ylabel="nodes up", ylim=(0, 105))
        axes.axvline(CRASHES_DONE_S, color="black", linewidth=0.8)
        axes.set(title=title, xlabel="simulated time (s)", xlim=(0, 2500))
        axes.grid(alpha=0.3)
        axes.legend(loc="lower right")
    panels[0].set(ylabel="test accuracy (aggregated model)")
    figure.suptitle("(c) 80 of 100 nodes crash, 5 every 60 s from t = 300 s (line: all down)")
    figure.savefig(RESULTS / "c_crash.png", dpi=120)


def churn_join() -> pd.DataFrame:
    """(c): when each joiner joined, and when it first sent a trained model (was sampled)."""
    runs = fedsim.load_runs(RUNS / "churn" / "join")
    times = runs[runs["node"].isna() & (runs["metric"] == "sim_time_s")]
    times = times.set_index(["run", "round"])["value"]
    sent = runs[(runs["metric"] == "node_bytes_model") & (runs["node"] >= 90)]
    sent = sent[sent["value"] > 0].sort_values("round").groupby(["run", "node"]).head(1)
    rows = []
    for run, seed in runs.groupby("run")["seed"].first().items():
        for node in range(90, 100):
            first = sent[(sent["run"] == run) & (sent["node"] == node)]
            rows.append(
                {
                    "seed": seed,
                    "node": node,
                    "joined_at_s": 20.0 + 60.0 * (node - 90),
                    "first_trained_by_s": (
                        times[(run, int(first["round"].iloc[0]))] if len(first) else np.nan
                    ),
                }
            )
    return pd.DataFrame(rows)


def main() -> None:
    RESULTS.mkdir(exist_ok=True)
    digits = pd.concat(aggregates(sweep) for sweep in sorted((RUNS / "digits").iterdir()))
    plot_convergence(digits)
    convergence(digits).to_csv(RESULTS / "a_convergence.csv", index=False, float_format="%.4g")
    communication().to_csv(RESULTS / "b_bytes_to_target.csv", index=False, float_format="%.4g")
    churn_crash().to_csv(RESULTS / "c_crash.csv", index=False, float_format="%.4g")
    plot_crash()
    churn_join().to_csv(RESULTS / "c_join.csv", index=False, float_format="%.4g")
    for path in sorted(RESULTS.glob("*.csv")):
        print(f"== {path.name}\n{pd.read_csv(path).to_string(index=False)}\n")


if __name__ == "__main__":
    main()
