"""Tables and a figure of the FedAMD study: rounds, per-example gradients and bytes to a
target accuracy, FedAMD against FedAvg, per seed.

Reads the sweeps that ``run.sh`` writes under ``runs/`` and writes ``results/``:
``curves.csv`` (every evaluation of every run, with the run's cumulative per-example
gradients and bytes), ``runs.csv`` (one row per run), ``summary.md`` (means over seeds)
and ``accuracy.png`` (accuracy against rounds and against per-example gradients).

FedAMD counts its own gradients (``gradient_samples``: every client's examples before
round 0, an anchor's examples, two per example of a miner's mini-batches); FedAvg's are
counted here from its sampled clients and their shard sizes (each example of its K
mini-batches once).

Usage: python experiments/seed_wave_2/fedamd/analyze.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

import fedsim
from fedsim.federation import Federation
from fedsim.strategies import FedAvg
from fedsim.training.schedule import samples_in_steps

HERE = Path(__file__).resolve().parent
RUNS, RESULTS = HERE / "runs", HERE / "results"
TARGETS = (0.80, 0.85, 0.90)
BUDGETS = (100e3, 200e3, 300e3, 400e3)  # per-example gradients, all methods within 100 rounds
LOCAL_STEPS, BATCH, SAMPLED, CLIENTS = 10, 64, 10, 20
LAST = 10  # evaluations (every 2 rounds) averaged as the "last 20 rounds" accuracy


def method(run: pd.Series) -> str:
    """The run's label: fedavg, or fedamd with its anchor schedule."""
    if run.strategy == "fedavg":
        return "fedavg"
    schedule = "optb" if "strategy.anchor_schedule=optb" in run.overrides else "p=0.2"
    return f"fedamd {schedule}"


def fedavg_gradients(path: Path, seed: int, rounds: np.ndarray) -> np.ndarray:
    """FedAvg's cumulative per-example gradients after each of ``rounds``."""
    counts = pd.read_parquet(path / "partition.parquet").groupby("node")["count"].sum()
    examples = counts.reindex(range(CLIENTS), fill_value=0).to_numpy()
    federation = Federation(CLIENTS, seed, None, examples)
    strategy = FedAvg(sample_size=SAMPLED, local_epochs=None, local_steps=LOCAL_STEPS)
    per_round = [
        samples_in_steps(examples[strategy.sample(r, federation)], LOCAL_STEPS, BATCH).sum()
        for r in range(int(rounds.max()))
    ]
    cumulative = np.concatenate([[0.0], np.cumsum(per_round)])
    return cumulative[rounds]


def curves() -> pd.DataFrame:
    """Per run and evaluation: method, seed, round, accuracy, gradients, bytes."""
    frames = []
    for sweep in sorted(RUNS.iterdir()):
        runs = fedsim.load_runs(sweep)
        runs = runs[runs.node.isna()]
        for run, rows in runs.groupby("run"):
            wide = rows.pivot_table(index="round", columns="metric", values="value")
            wide = wide.dropna(subset=["accuracy"]).reset_index()
            first = rows.iloc[0]
            if first.strategy == "fedavg":
                wide["gradient_samples"] = fedavg_gradients(
                    sweep / run, int(first.seed), wide["round"].to_numpy()
                )
            wide["gradient_samples"] = wide["gradient_samples"].fillna(0.0)
            wide["method"], wide["seed"] = method(first), int(first.seed)
            frames.append(
                wide[
                    ["method", "seed", "round", "accuracy", "loss"]
                    + ["gradient_samples", "bytes_sent_total"]
                ]
            )
    return pd.concat(frames, ignore_index=True)


def per_run(table: pd.DataFrame) -> pd.DataFrame:
    """Final and last-20-round accuracy; rounds, gradients and MB at each target."""
    rows = []
    for (name, seed), history in table.groupby(["method", "seed"]):
        history = history.sort_values("round")
        row = {"method": name, "seed": seed, "final": history.accuracy.iloc[-1]}
        row["last20"] = history.accuracy.iloc[-LAST:].mean()
        row["gradients_total"] = history.gradient_samples.iloc[-1]
        for target in TARGETS:
            reached = history[history.accuracy >= target]
            first = reached.iloc[0] if len(reached) else None
            row[f"rounds_to_{target}"] = first["round"] if first is not None else np.nan
            row[f"kgrad_to_{target}"] = (
                first.gradient_samples / 1e3 if first is not None else np.nan
            )
            row[f"mb_to_{target}"] = first.bytes_sent_total / 1e6 if first is not None else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


def summary(runs: pd.DataFrame) -> str:
    """Means over seeds (and how many seeds reached each target)."""
    lines = [
        "| method | final acc | last-20 acc | 10^3 gradients in 100 rounds | "
        + " | ".join(f"rounds / 10^3 grads / MB to {t:.0%}" for t in TARGETS)
        + " |",
        "|---" * (4 + len(TARGETS)) + "|",
    ]
    for name, group in runs.groupby("method"):
        cells = [
            name,
            f"{group.final.mean():.3f} ± {group.final.std():.3f}",
            f"{group.last20.mean():.3f}",
            f"{group.gradients_total.mean() / 1e3:.0f}",
        ]
        for target in TARGETS:
            reached = group[f"rounds_to_{target}"].notna().sum()
            cells.append(
                f"{group[f'rounds_to_{target}'].mean():.0f} / "
                f"{group[f'kgrad_to_{target}'].mean():.0f} / "
                f"{group[f'mb_to_{target}'].mean():.1f} ({reached}/{len(group)})"
            )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def at_budgets(table: pd.DataFrame) -> str:
    """Accuracy (and round) at the last evaluation within each gradient budget, mean of
    the seeds: the comparison at equal per-example gradients."""
    lines = [
        "| method | "
        + " | ".join(f"acc (round) at {b / 1e3:.0f}k gradients" for b in BUDGETS)
        + " |",
        "|---" * (1 + len(BUDGETS)) + "|",
    ]
    for name, group in table.groupby("method"):
        cells = [name]
        for budget in BUDGETS:
            within = group[group.gradient_samples <= budget].groupby("seed").last()
            cells.append(f"{within.accuracy.mean():.3f} ({within['round'].mean():.0f})")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def figure(table: pd.DataFrame) -> None:
    """Mean accuracy over seeds against rounds and against per-example gradients."""
    fig = Figure(figsize=(10, 4))
    by_round, by_gradient = fig.subplots(1, 2, sharey=True)
    for name, group in table.groupby("method"):
        mean = group.groupby("round")[["accuracy", "gradient_samples"]].mean()
        by_round.plot(mean.index, mean.accuracy, label=name)
        by_gradient.plot(mean.gradient_samples / 1e3, mean.accuracy, label=name)
    by_round.set(xlabel="round", ylabel="test accuracy (mean of 3 seeds)", ylim=(0.5, 1.0))
    by_gradient.set(xlabel="per-example gradients (10^3)")
    by_round.legend()
    fig.tight_layout()
    fig.savefig(RESULTS / "accuracy.png", dpi=120)


def main() -> None:
    RESULTS.mkdir(exist_ok=True)
    table = curves()
    table.to_csv(RESULTS / "curves.csv", index=False, float_format="%.6g")
    runs = per_run(table)
    runs.to_csv(RESULTS / "runs.csv", index=False, float_format="%.6g")
    text = summary(runs) + "\n" + at_budgets(table)
    (RESULTS / "summary.md").write_text(text)
    figure(table)
    print(text)


if __name__ == "__main__":
    main()
