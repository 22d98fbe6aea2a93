"""Tables and a figure of the FedDisco study: FedDisco's weights against FedAvg's, per seed.

Reads the sweeps that ``run.sh`` writes under ``runs/`` and writes ``results/``:
``runs.csv`` (one row per run), ``paired.csv`` (FedDisco minus FedAvg weights, per
partition, strategy and seed), ``summary.md`` (means over seeds, paired differences),
``weights.csv`` (the weights FedDisco gives each client, from the run's partition) and
``accuracy_vs_round.png``.

Usage: python experiments/seed_wave_2/feddisco/analyze.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

import fedsim
from fedsim.aggregators.feddisco import disco_weights, discrepancies

HERE = Path(__file__).resolve().parent
RUNS, RESULTS = HERE / "runs", HERE / "results"
PARTITIONS = {"niid2": "NIID-2 (5 two-class + 1 IID)", "niid1": "NIID-1 (Dir 0.5, 10 clients)"}
TARGETS = (0.90, 0.93, 0.95)
COLOURS = {"fedavg": "C0", "fedprox": "C3"}
LAST = 10  # evaluations (every 2 rounds) averaged as the "last 20 rounds" accuracy


def curves() -> pd.DataFrame:
    """Per run and evaluation: partition, strategy, aggregator, seed, round, accuracy."""
    frames = []
    for partition in PARTITIONS:
        for sweep in sorted((RUNS / partition).iterdir()):
            runs = fedsim.load_runs(sweep)
            runs = runs[runs.node.isna() & (runs.metric == "accuracy")]
            runs = runs[["run", "round", "value", "strategy", "aggregator", "seed"]].copy()
            runs["partition"] = partition
            runs["path"] = [str(sweep / run) for run in runs["run"]]
            frames.append(runs.rename(columns={"value": "accuracy"}))
    return pd.concat(frames, ignore_index=True)


def per_run(table: pd.DataFrame) -> pd.DataFrame:
    """Final, best and last-20-rounds accuracy, and the first round at each target."""
    rows = []
    keys = ["partition", "strategy", "aggregator", "seed"]
    for key, history in table.groupby(keys):
        history = history.sort_values("round")
        row = dict(zip(keys, key, strict=True))
        row["final"] = history.accuracy.iloc[-1]
        row["best"] = history.accuracy.max()
        row["last20"] = history.accuracy.iloc[-LAST:].mean()
        row["mean_over_rounds"] = history.accuracy.iloc[1:].mean()  # the curve's area
        for target in TARGETS:
            reached = history.loc[history.accuracy >= target, "round"]
            row[f"rounds_to_{target}"] = reached.iloc[0] if len(reached) else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


def paired(runs: pd.DataFrame) -> pd.DataFrame:
    """FedDisco minus FedAvg weights, run by run (same partition, strategy and seed)."""
    keys = ["partition", "strategy", "seed"]
    metrics = [c for c in runs.columns if c not in (*keys, "aggregator")]
    wide = runs.pivot_table(index=keys, columns="aggregator", values=metrics)
    difference = wide.xs("feddisco", axis=1, level=1) - wide.xs("mean", axis=1, level=1)
    return difference.reset_index()


def weights(table: pd.DataFrame) -> pd.DataFrame:
    """FedDisco's weights (a=0.5, b=0.1, KL) and FedAvg's for each partition's seed-0 run."""
    rows = []
    for partition in PARTITIONS:
        seed0 = table.query("partition == @partition and seed == 0 and aggregator == 'feddisco'")
        path = Path(seed0.path.iloc[0])
        counts = pd.read_parquet(path / "partition.parquet")
        histograms = counts.pivot_table(
            index="node", columns="label", values="count", fill_value=0
        ).to_numpy()
        sizes = histograms.sum(axis=1)
        d = discrepancies(histograms, "kl")
        disco = disco_weights(sizes, d, 0.5, 0.1)
        for node, (size, kl, weight) in enumerate(zip(sizes, d, disco, strict=True)):
            rows.append(
                {"partition": partition, "node": node, "examples": size, "d_kl": kl,
                 "fedavg_weight": size / sizes.sum(), "feddisco_weight": weight}
            )  # fmt: skip
    return pd.DataFrame(rows)


def summary_markdown(runs: pd.DataFrame, differences: pd.DataFrame) -> str:
    """Means (and standard deviations) over seeds, and the paired differences."""
    lines = []
    for partition, title in PARTITIONS.items():
        lines += [f"### {title}", "",
                  "| strategy | weights | final | best | last 20 rounds | mean over rounds | "
                  "rounds to 90% | to 93% | to 95% |",
                  "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
        subset = runs[runs.partition == partition]
        for (strategy, aggregator), group in subset.groupby(["strategy", "aggregator"]):
            name = "FedDisco" if aggregator == "feddisco" else "FedAvg (n_k/N)"
            cells = [f"{group[m].mean():.4f} ± {group[m].std():.4f}"
                     for m in ("final", "best", "last20", "mean_over_rounds")]  # fmt: skip
            cells += [_rounds(group[f"rounds_to_{t}"]) for t in TARGETS]
            lines.append(f"| {strategy} | {name} | " + " | ".join(cells) + " |")
        lines += ["", "FedDisco minus FedAvg weights, paired by seed (mean ± std over 5 seeds; "
                  "wins/ties/losses):", "",
                  "| strategy | final | best | last 20 rounds | mean over rounds | "
                  "rounds to 93% |", "|---|---|---|---|---|---|"]  # fmt: skip
        for strategy, group in differences[differences.partition == partition].groupby("strategy"):
            cells = [_difference(group[m]) for m in ("final", "best", "last20", "mean_over_rounds")]
            cells.append(_difference(group["rounds_to_0.93"], digits=1, lower_is_better=True))
            lines.append(f"| {strategy} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def _rounds(values: pd.Series) -> str:
    reached = values.dropna()
    text = f"{reached.mean():.1f}" if len(reached) else "-"
    return text if len(reached) == len(values) else f"{text} ({len(reached)}/{len(values)})"


def _difference(values: pd.Series, digits: int = 4, lower_is_better: bool = False) -> str:
    values = values.dropna()
    sign = -1 if lower_is_better else 1
    wins, losses = int((sign * values > 0).sum()), int((sign * values < 0).sum())
    ties = len(values) - wins - losses
    return f"{values.mean():+.{digits}f} ± {values.std():.{digits}f} ({wins}/{ties}/{losses})"


def plot(table: pd.DataFrame, path: Path) -> None:
    figure = Figure(figsize=(11, 4.2), layout="constrained")
    for axes, (partition, title) in zip(figure.subplots(1, 2), PARTITIONS.items(), strict=True):
        subset = table[table.partition == partition]
        for (strategy, aggregator), group in subset.groupby(["strategy", "aggregator"]):
            mean = group.groupby("round").accuracy.mean()
            name = f"{strategy} + {'FedDisco' if aggregator == 'feddisco' else 'FedAvg weights'}"
            style = "-" if aggregator == "feddisco" else "--"
            colour = COLOURS[strategy]
            axes.plot(mean.index, mean.values, style, color=colour, label=name)
        axes.set(title=title, xlabel="round", ylabel="test accuracy (mean of 5 seeds)")
        axes.set_ylim(0.8, 0.98)
        axes.grid(alpha=0.3)
        axes.legend(loc="lower right")
    figure.savefig(path, dpi=120)


def main() -> None:
    RESULTS.mkdir(exist_ok=True)
    table = curves()
    runs = per_run(table)
    differences = paired(runs)
    runs.to_csv(RESULTS / "runs.csv", index=False, float_format="%.6g")
    differences.to_csv(RESULTS / "paired.csv", index=False, float_format="%.6g")
    weights(table).to_csv(RESULTS / "weights.csv", index=False, float_format="%.6g")
    (RESULTS / "summary.md").write_text(summary_markdown(runs, differences))
    plot(table, RESULTS / "accuracy_vs_round.png")
    print((RESULTS / "summary.md").read_text())


if __name__ == "__main__":
    main()
