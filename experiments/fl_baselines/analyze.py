"""Table and figure of the FL-baselines study: five strategies under four partitions of digits.

Reads the sweeps that ``run.sh`` writes under ``runs/`` and writes ``results/``:
``results.csv`` (one row per run: strategy, partition, seed, final and best test accuracy of
the server model), ``table.md`` (mean ± sample std over the seeds; strategies by partitions),
``accuracy.png`` (accuracy against round, mean over seeds, ± std shaded), ``partitions.csv``
(what each partition gives the 10 nodes), and the side checks ``fedprox_mu.csv``,
``fedadam_server_lr.csv``, ``momentum.csv`` and ``long_local.csv``.

Usage: python experiments/fl_baselines/analyze.py
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

import fedsim

HERE = Path(__file__).resolve().parent
RUNS, RESULTS = HERE / "runs", HERE / "results"
PARTITIONS = {"iid": "IID", "dir0.5": "Dir(0.5)", "c1": "#C=1", "c2": "#C=2"}
STYLES = {"fedavg": "-", "fedprox": "--", "scaffold": "-", "fednova": ":", "fedadam": "-"}
STRATEGIES = {
    "fedavg": "FedAvg",
    "fedprox": "FedProx",
    "scaffold": "SCAFFOLD",
    "fednova": "FedNova",
    "fedadam": "FedAdam",
}


def accuracy_curves(sweep: Path, settings: list[str]) -> pd.DataFrame:
    """The server model's test accuracy per run and round, with the runs' ``settings``."""
    rows = fedsim.load_runs(sweep)
    rows = rows[(rows["metric"] == "accuracy") & rows["node"].isna()]
    columns = ["run", "round", "value", *settings]
    return rows[columns].rename(columns={"value": "accuracy"}).reset_index(drop=True)


def per_run(curves: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Final (last round) and best accuracy of every run."""
    ordered = curves.sort_values("round")
    grouped = ordered.groupby(["run", *by])
    summary = grouped["accuracy"].agg(final_accuracy="last", best_accuracy="max")
    summary["rounds"] = grouped["round"].max()
    return summary.reset_index().drop(columns="run")


def mean_std(values: pd.Series) -> str:
    return f"{values.mean():.3f} ± {values.std(ddof=1):.3f}"


def markdown_table(results: pd.DataFrame, column: str) -> str:
    """Strategies by partitions, mean ± std over seeds of ``column``."""
    cells = results.groupby(["strategy", "partition"])[column].agg(mean_std).unstack()
    cells = cells.loc[list(STRATEGIES), list(PARTITIONS.values())]
    header = "| strategy | " + " | ".join(cells.columns) + " |"
    lines = [header, "|---" * (len(cells.columns) + 1) + "|"]
    for strategy, row in cells.iterrows():
        lines.append(f"| {STRATEGIES[str(strategy)]} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def plot(curves: pd.DataFrame, path: Path) -> None:
    figure = Figure(figsize=(4.2 * len(PARTITIONS), 3.8), layout="constrained")
    axes_list = figure.subplots(1, len(PARTITIONS), sharey=True)
    for axes, partition in zip(axes_list, PARTITIONS.values(), strict=True):
        subset = curves[curves["partition"] == partition]
        for strategy, name in STRATEGIES.items():
            by_round = subset[subset["strategy"] == strategy].groupby("round")["accuracy"]
            mean, std = by_round.mean(), by_round.std(ddof=1).fillna(0.0)
            axes.plot(mean.index, mean.values, STYLES[strategy], label=name)
            axes.fill_between(mean.index, mean - std, mean + std, alpha=0.15)
        axes.set(title=f"digits, 10 clients, {partition}", xlabel="round")
        axes.grid(alpha=0.3)
    axes_list[0].set(ylabel="test accuracy (server model), mean of 3 seeds", ylim=(0, 1))
    axes_list[-1].legend(loc="lower right")
    figure.savefig(path, dpi=120)


def partition_summary() -> pd.DataFrame:
    """Per partition and seed: node sizes and labels per node (the same for every strategy)."""
    rows = []
    for key, partition in PARTITIONS.items():
        for run in sorted((RUNS / key).iterdir()):
            if not (run / "partition.parquet").exists():
                continue
            seed = json.loads((run / "summary.json").read_text())["config"]["seed"]
            counts = pd.read_parquet(run / "partition.parquet")
            held = counts[counts["count"] > 0]
            sizes = held.groupby("node")["count"].sum()
            labels = held.groupby("node")["label"].nunique()
            rows.append(
                {
                    "partition": partition,
                    "seed": seed,
                    "nodes": len(sizes),
                    "examples_min": sizes.min(),
                    "examples_max": sizes.max(),
                    "labels_per_node_min": labels.min(),
                    "labels_per_node_mean": labels.mean(),
                    "labels_per_node_max": labels.max(),
                }
            )
    return pd.DataFrame(rows).drop_duplicates().sort_values(["partition", "seed"], key=_order)


def _order(column: pd.Series) -> pd.Series:
    return column.map(list(PARTITIONS.values()).index) if column.name == "partition" else column


def momentum_table(results: pd.DataFrame) -> pd.DataFrame:
    """#C=1 and #C=2 with NIID-Bench's optimizer (lr 0.01, momentum 0.9) beside the main runs."""
    frames = [results.assign(optimizer="SGD lr 0.05")]
    for key in ("c1", "c2"):
        runs = per_run(
            accuracy_curves(RUNS / f"{key}_momentum", ["strategy", "seed"]), ["strategy", "seed"]
        )
        frames.append(runs.assign(partition=PARTITIONS[key], optimizer="SGD lr 0.01 momentum 0.9"))
    both = pd.concat(frames, ignore_index=True).astype({"strategy": str, "partition": str})
    both = both[
        both["strategy"].isin(frames[-1]["strategy"]) & both["partition"].isin(["#C=1", "#C=2"])
    ]
    table = both.groupby(["partition", "strategy", "optimizer"])["final_accuracy"].agg(
        ["mean", "std"]
    )
    table.columns = ["final_accuracy_mean", "final_accuracy_std"]
    return table.reset_index().sort_values(
        ["partition", "strategy", "optimizer"],
        key=lambda c: c.map(list(STRATEGIES).index) if c.name == "strategy" else c,
    )


def long_local_table(curves: pd.DataFrame) -> pd.DataFrame:
    """#C=1 with 100 local epochs for 20 rounds beside the main runs (10 epochs), rounds 20, 50."""
    main_c1 = curves[curves["partition"] == "#C=1"]
    long = accuracy_curves(RUNS / "c1_long_local", ["strategy", "seed"])
    columns = {
        "10 epochs, round 20": main_c1[main_c1["round"] == 20],
        "10 epochs, round 50": main_c1[main_c1["round"] == 50],
        "100 epochs, round 20": long[long["round"] == 20],
    }
    table = pd.DataFrame(
        {name: rows.groupby("strategy")["accuracy"].agg(mean_std) for name, rows in columns.items()}
    )
    table = table.loc[[s for s in STRATEGIES if s in set(long["strategy"])]]
    return table.rename_axis("strategy").reset_index()


def main() -> None:
    RESULTS.mkdir(exist_ok=True)
    frames = []
    for key, partition in PARTITIONS.items():
        curves = accuracy_curves(RUNS / key, ["strategy", "seed"])
        curves["partition"] = partition
        frames.append(curves)
    curves = pd.concat(frames, ignore_index=True)
    results = per_run(curves, ["strategy", "partition", "seed"])
    results["strategy"] = pd.Categorical(results["strategy"], list(STRATEGIES))
    results["partition"] = pd.Categorical(results["partition"], list(PARTITIONS.values()))
    results = results.sort_values(["partition", "strategy", "seed"])
    results.to_csv(RESULTS / "results.csv", index=False, float_format="%.4f")
    (RESULTS / "table.md").write_text(
        "Final test accuracy (round 50), mean ± std over seeds 0, 1, 2:\n\n"
        + markdown_table(results, "final_accuracy")
        + "\n\nBest test accuracy over the 50 rounds, mean ± std over seeds 0, 1, 2:\n\n"
        + markdown_table(results, "best_accuracy")
        + "\n"
    )
    plot(curves, RESULTS / "accuracy.png")
    partition_summary().to_csv(RESULTS / "partitions.csv", index=False, float_format="%.2f")

    mu = accuracy_curves(RUNS / "c1_fedprox_mu", ["strategy.mu", "seed"])
    mu_runs = per_run(mu, ["strategy.mu", "seed"])
    main_fedprox = results[(results["strategy"] == "fedprox") & (results["partition"] == "#C=1")]
    mu_runs = pd.concat([mu_runs, main_fedprox.assign(**{"strategy.mu": 0.01})[mu_runs.columns]])
    mu_table = mu_runs.groupby("strategy.mu")[["final_accuracy", "best_accuracy"]].agg(
        ["mean", "std"]
    )
    mu_table.columns = [f"{metric}_{stat}" for metric, stat in mu_table.columns]
    mu_table.reset_index().rename(columns={"strategy.mu": "mu"}).to_csv(
        RESULTS / "fedprox_mu.csv", index=False, float_format="%.4f"
    )

    lr = accuracy_curves(RUNS / "iid_fedadam_lr", ["strategy.server_lr"])
    at = lr.pivot_table(index="strategy.server_lr", columns="round", values="accuracy")
    lr_table = pd.DataFrame(
        {f"accuracy_round_{r}": at[r] for r in (1, 5, 10, 20, int(at.columns.max()))}
    )
    lr_table["best_accuracy"] = at.max(axis=1)
    lr_table.reset_index().rename(columns={"strategy.server_lr": "server_lr"}).to_csv(
        RESULTS / "fedadam_server_lr.csv", index=False, float_format="%.4f"
    )
    momentum_table(results).to_csv(RESULTS / "momentum.csv", index=False, float_format="%.4f")
    long_local_table(curves).to_csv(RESULTS / "long_local.csv", index=False)
    print((RESULTS / "table.md").read_text())
    for path in sorted(RESULTS.glob("*.csv")):
        if path.name != "results.csv":
            print(f"== {path.name}\n{pd.read_csv(path).to_string(index=False)}\n")


if __name__ == "__main__":
    main()
