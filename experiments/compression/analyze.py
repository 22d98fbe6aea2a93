"""Tables and figure of the compression study's digits runs: accuracy against bytes.

Reads the sweeps that ``run.sh`` writes under ``runs/`` (each run's ``summary.json`` for the
final numbers, ``metrics.parquet`` for the curves) and writes ``results/``:
``gamma_check.csv`` (CHOCO-SGD's consensus step per compressor, IID, seed 0, 50 rounds),
``results.csv`` (one row per run), ``curves.csv`` (mean over seeds of the accuracies and the
cumulative bytes per eval round), ``table.md`` (mean ± std over seeds; bytes to reach the dense
baseline's accuracy) and ``accuracy_vs_bytes.png``.

Bytes per node: decentralized, every node's sent bytes (``bytes_sent_total`` / 100: all
device-to-device); FedAvg, the uploads (``bytes_uplink_total`` / 100 clients; the dense
downloads are the same for every FedAvg variant and are listed apart).

Usage: python experiments/compression/analyze.py
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

HERE = Path(__file__).resolve().parent
RUNS, RESULTS = HERE / "runs", HERE / "results"
NUM_NODES = 100
PARTITIONS = {"iid": "IID", "labels": "#C=2"}
DECENTRALIZED = {
    "dpsgd": "D-PSGD (dense)",
    "choco_topk0.01": "CHOCO top-1%",
    "choco_topk0.1": "CHOCO top-10%",
    "choco_sign": "CHOCO sign",
    "choco_qsgd": "CHOCO QSGD s=15",
}
FEDERATED = {
    "fedavg": "FedAvg (dense)",
    "fedavg_topk0.01": "FedAvg top-1%",
    "fedavg_topk0.01_ef": "FedAvg top-1% + EF",
    "fedavg_qsgd": "FedAvg QSGD s=15",
    "fedavg_sign_ef": "FedAvg sign + EF",
}
METHODS = {**DECENTRALIZED, **FEDERATED}
FINAL = [
    "accuracy",
    "node_accuracy_mean",
    "consensus_distance",
    "bytes_sent_total",
    "bytes_d2d_total",
    "bytes_uplink_total",
    "bytes_downlink_total",
    "compression_ratio",
    "wall_time_s",
]
# "Equal accuracy": within this many points of the dense baseline's final mean accuracy.
TOLERANCE = 0.01


def summaries(folder: Path) -> list[tuple[Path, dict]]:
    found = []
    for path in sorted(folder.glob("*/summary.json")):
        summary = json.loads(path.read_text())
        if "final" not in summary:  # still running, or crashed before its first evaluation
            print(f"skipping {path.parent} (no final metrics)")
            continue
        found.append((path.parent, summary))
    return found


def gamma_check() -> pd.DataFrame:
    rows = []
    for folder in sorted((RUNS / "gamma").iterdir()):
        for _, summary in summaries(folder):
            final = summary["final"]
            rows.append(
                {
                    "compressor": folder.name,
                    "consensus_lr": summary["config"]["strategy"]["consensus_lr"],
                    "status": summary["status"],
                    "accuracy": final["accuracy"],
                    "node_accuracy_mean": final["node_accuracy_mean"],
                    "consensus_distance": final["consensus_distance"],
                    "bytes_per_node": final["bytes_sent_total"] / NUM_NODES,
                }
            )
    return pd.DataFrame(rows).sort_values(["compressor", "consensus_lr"])


def per_run() -> tuple[pd.DataFrame, pd.DataFrame]:
    """One row per run (final numbers) and the curves (per eval round) of every run."""
    rows, curves = [], []
    for key, partition in PARTITIONS.items():
        for method in METHODS:
            for run, summary in summaries(RUNS / key / method):
                seed = summary["config"]["seed"]
                row = {"partition": partition, "method": method, "seed": seed}
                row["status"] = summary["status"]
                row.update({name: summary["final"].get(name, np.nan) for name in FINAL})
                row["bytes_per_node"] = bytes_per_node(method, summary["final"])
                rows.append(row)
                metrics = pd.read_parquet(run / "metrics.parquet")
                metrics = metrics[metrics["node"].isna()]
                wide = metrics.pivot_table(index="round", columns="metric", values="value")
                curve = pd.DataFrame(
                    {
                        "accuracy": wide["accuracy"],
                        "node_accuracy_mean": wide.get("node_accuracy_mean", np.nan),
                        "bytes_per_node": [
                            bytes_per_node(method, values) for _, values in wide.iterrows()
                        ],
                    }
                ).reset_index()
                curves.append(curve.assign(partition=partition, method=method, seed=seed))
    return pd.DataFrame(rows), pd.concat(curves, ignore_index=True)


def bytes_per_node(method: str, values) -> float:
    column = "bytes_sent_total" if method in DECENTRALIZED else "bytes_uplink_total"
    return float(values[column]) / NUM_NODES


def mean_std(values: pd.Series, digits: int = 3) -> str:
    return f"{values.mean():.{digits}f} ± {values.std(ddof=1):.{digits}f}"


def bytes_to_target(mean_curves: pd.DataFrame, dense: str, metric: str) -> dict[str, float]:
    """Per method: bytes per node at the first eval round where the mean (over seeds) of
    ``metric`` is within TOLERANCE of the dense method's final mean; nan if never."""
    found = {}
    dense_final = mean_curves[mean_curves["method"] == dense].sort_values("round")
    if dense_final.empty:
        return found
    target = dense_final[metric].iloc[-1] - TOLERANCE
    for method, curve in mean_curves.groupby("method"):
        reached = curve.sort_values("round")
        reached = reached[reached[metric] >= target]
        found[str(method)] = reached["bytes_per_node"].iloc[0] if len(reached) else np.nan
    return found


def markdown(results: pd.DataFrame, mean_curves: pd.DataFrame) -> str:
    lines = []
    for family, methods, dense, what in (
        ("Decentralized", DECENTRALIZED, "dpsgd", "bytes sent per node"),
        ("FedAvg", FEDERATED, "fedavg", "upload bytes per client"),
    ):
        lines += [
            f"### {family} (100 nodes, 100 rounds; mean ± std over seeds 0, 1, 2)",
            "",
            (
                "Accuracy: the average of the nodes' models; node acc.: mean accuracy of the "
                "nodes' own models; consensus dist.: mean squared distance of the nodes' "
                "models to their average."
                if family != "FedAvg"
                else "Accuracy: the server model; down MB: the dense downloads per client."
            )
            + f" MB: {what} over the 100 rounds; bytes ratio: dense MB / MB."
            f" To target: {what} when the mean curve first comes within "
            f"{TOLERANCE:.2f} of the dense run's final accuracy (and how many times fewer "
            "than dense); '-' never within 100 rounds.",
            "",
        ]
        metrics = ["accuracy", "node_accuracy_mean"] if family != "FedAvg" else ["accuracy"]
        header = "| partition | method | accuracy | " + (
            "node acc. | consensus dist. | " if family != "FedAvg" else ""
        )
        header += (
            "MB | "
            + ("down MB | " if family == "FedAvg" else "")
            + "bytes ratio | "
            + " | ".join(f"to target ({m})" for m in metrics)
            + " |"
        )
        lines += [header, "|" + "---|" * (header.count("|") - 1)]
        for partition in PARTITIONS.values():
            subset = results[results["partition"] == partition]
            curves = mean_curves[mean_curves["partition"] == partition]
            targets = {m: bytes_to_target(curves, dense, m) for m in metrics}
            dense_bytes = subset[subset["method"] == dense]["bytes_per_node"].mean()
            for method, name in methods.items():
                runs = subset[subset["method"] == method]
                if runs.empty:
                    continue
                cells = [partition, name, mean_std(runs["accuracy"])]
                if family != "FedAvg":
                    cells += [
                        mean_std(runs["node_accuracy_mean"]),
                        mean_std(runs["consensus_distance"], 2),
                    ]
                cells.append(f"{runs['bytes_per_node'].mean() / 1e6:.3g}")
                if family == "FedAvg":
                    cells.append(f"{runs['bytes_downlink_total'].mean() / NUM_NODES / 1e6:.3g}")
                cells += [
                    f"{dense_bytes / runs['bytes_per_node'].mean():.1f}x",
                ]
                for metric in metrics:
                    reached = targets[metric].get(method, np.nan)
                    dense_reached = targets[metric].get(dense, np.nan)
                    cells.append(
                        "-"
                        if np.isnan(reached)
                        else f"{reached / 1e6:.3g} MB ({dense_reached / reached:.0f}x)"
                    )
                lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def plot(mean_curves: pd.DataFrame, path: Path) -> None:
    figure = Figure(figsize=(11, 8), layout="constrained")
    axes = figure.subplots(2, len(PARTITIONS), sharey=True)
    for column, partition in enumerate(PARTITIONS.values()):
        for row, methods in enumerate((DECENTRALIZED, FEDERATED)):
            subplot = axes[row, column]
            for index, (method, name) in enumerate(methods.items()):
                curve = mean_curves[
                    (mean_curves["partition"] == partition) & (mean_curves["method"] == method)
                ].sort_values("round")
                curve = curve[curve["bytes_per_node"] > 0]
                color = f"C{index}"
                subplot.plot(
                    curve["bytes_per_node"], curve["accuracy"], "-", color=color, label=name
                )
                if methods is DECENTRALIZED:
                    subplot.plot(
                        curve["bytes_per_node"], curve["node_accuracy_mean"], ":", color=color
                    )
            family = "decentralized, 4-regular" if row == 0 else "FedAvg, 10 of 100 a round"
            xlabel = "bytes sent per node" if row == 0 else "upload bytes per client"
            subplot.set(title=f"digits, {family}, {partition}", xlabel=xlabel, xscale="log")
            subplot.grid(alpha=0.3)
            subplot.legend(loc="lower right", fontsize=8)
    axes[0, 0].set(
        ylabel="test accuracy (solid: average model;\ndotted: nodes' own, mean)", ylim=(0, 1)
    )
    axes[1, 0].set(ylabel="test accuracy (server model)")
    figure.savefig(path, dpi=120)


def main() -> None:
    RESULTS.mkdir(exist_ok=True)
    gamma_check().to_csv(RESULTS / "gamma_check.csv", index=False, float_format="%.4f")
    results, curves = per_run()
    order = {"partition": list(PARTITIONS.values()), "method": list(METHODS)}
    results = results.sort_values(
        ["partition", "method", "seed"],
        key=lambda c: c.map(order[c.name].index) if c.name in order else c,
    )
    results.to_csv(RESULTS / "results.csv", index=False, float_format="%.6g")
    mean_curves = (
        curves.groupby(["partition", "method", "round"])[
            ["accuracy", "node_accuracy_mean", "bytes_per_node"]
        ]
        .mean()
        .reset_index()
    )
    mean_curves.to_csv(RESULTS / "curves.csv", index=False, float_format="%.6g")
    (RESULTS / "table.md").write_text(markdown(results, mean_curves))
    plot(mean_curves, RESULTS / "accuracy_vs_bytes.png")
    print((RESULTS / "table.md").read_text())


if __name__ == "__main__":
    main()
