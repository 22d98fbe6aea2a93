"""S2S vs S2A in the high inter-component heterogeneity regime (R3) under three metrics.

Reads every run under ``runs/`` (written by ``run.sh``) and writes ``results.csv`` (one row
per run) and ``gaps.md`` (the S2S - S2A gap per setting, mean and std over seeds).

Metrics per run:

- ``average``: accuracy of the devices' average model on the global test set, mean over the
  evaluations of the last 10 % of rounds (the metric of ``../README.md``; fedsim's default
  ``evaluate=average``);
- ``devices``: the mean over devices of each device's own model on the global test set, same
  tail (fedsim's ``node_accuracy_mean``, the headline of ``evaluate=individual``);
- ``local``: the mean over devices of each device's own model on a test set drawn from its
  own label distribution (class-wise test accuracy weighted by the device's training label
  counts), at the final round, from the run's checkpoint.  This is how FedEM-derived code
  (the codebase of the first author's earlier FedStale, whose ``Aggregator.write_logs``
  averages each client's accuracy on its own test split) scores decentralized models; the
  paper's own metric is not known from the sources (``../shared/papers/semi-decentralized.md``
  section 6).

Usage: python experiments/semi_decentralized/r3/analyze.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from omegaconf import OmegaConf

import fedsim
from fedsim.build import instantiate
from fedsim.metrics.tables import markdown_table
from fedsim.training.evaluate import Evaluator
from fedsim.training.layout import ParameterLayout

HERE = Path(__file__).resolve().parent
RUNS = HERE / "runs"
TAIL = 0.1
SETTING = ["sweep", "model", "strategy.local_steps", "optimizer.lr", "topology.kind",
           "topology.num_components", "strategy.sampling_rate", "strategy.server_period",
           "rounds"]  # fmt: skip


def local_accuracy(class_accuracy: np.ndarray, label_counts: np.ndarray) -> np.ndarray:
    """Each device's accuracy on its own label distribution: its per-class test accuracy
    (devices x classes) weighted by its share of training examples per class."""
    shares = label_counts / label_counts.sum(axis=1, keepdims=True)
    return (class_accuracy * shares).sum(axis=1)


def class_accuracies(run: Path) -> tuple[np.ndarray, np.ndarray]:
    """(devices x classes) test accuracy of each device's final model per class, and the
    devices' training label counts, from the run's checkpoint and partition."""
    cfg = OmegaConf.load(run / ".hydra" / "config.yaml")
    dataset = instantiate(cfg.data)
    model = instantiate(cfg.model)(input_shape=dataset.input_shape, num_classes=dataset.num_classes)
    layout = ParameterLayout.of(model)
    state = torch.load(run / "checkpoint.pt", weights_only=False)
    rows = state["backend"]["params"][: cfg.num_nodes]
    accuracy = np.zeros((cfg.num_nodes, dataset.num_classes))
    for label in range(dataset.num_classes):
        mask = dataset.test_y == label
        evaluator = Evaluator(model, layout, dataset.test_x[mask], dataset.test_y[mask])
        accuracy[:, label] = evaluator.accuracies(rows).numpy()
    partition = pd.read_parquet(run / "partition.parquet")
    counts = partition.pivot_table(index="node", columns="label", values="count", fill_value=0)
    counts = counts.reindex(index=range(cfg.num_nodes), columns=range(dataset.num_classes))
    return accuracy, counts.fillna(0).to_numpy(dtype=float)


def per_run() -> pd.DataFrame:
    rows = []
    for sweep in sorted(path for path in RUNS.iterdir() if path.is_dir()):
        runs = fedsim.load_runs(sweep)
        scalars = runs[
            runs["node"].isna() & runs["metric"].isin(["accuracy", "node_accuracy_mean"])
        ]
        tail = scalars[scalars["round"] >= (1 - TAIL) * scalars["rounds"]]
        for run, group in tail.groupby("run"):
            first = group.iloc[0]
            means = group.groupby("metric")["value"].mean()
            accuracy, counts = class_accuracies(sweep / run)
            rows.append({
                "sweep": sweep.name,
                **{key: first[key] for key in SETTING[1:]},
                "strategy": first["strategy"], "seed": first["seed"],
                "average": means["accuracy"], "devices": means["node_accuracy_mean"],
                "local": float(local_accuracy(accuracy, counts).mean()),
            })  # fmt: skip
    return pd.DataFrame(rows)


def gaps(results: pd.DataFrame) -> pd.DataFrame:
    """S2S - S2A per setting and seed (paired: both draw the same server samples), then
    mean and std over seeds, in percentage points."""
    paired = results.pivot_table(index=[*SETTING, "seed"], columns="strategy",
                                 values=["average", "devices", "local"])  # fmt: skip
    table = {}
    for metric in ("average", "devices", "local"):
        gap = 100 * (paired[(metric, "s2s")] - paired[(metric, "s2a")])
        grouped = gap.groupby(level=SETTING)
        table[f"{metric}_gap_pp"] = grouped.mean().round(2)
        table[f"{metric}_std_pp"] = grouped.std().round(2)
        table[f"s2a_{metric}"] = paired[(metric, "s2a")].groupby(level=SETTING).mean().round(4)
    table["seeds"] = grouped.size()
    return pd.DataFrame(table).reset_index()


def main() -> None:
    results = per_run()
    results.to_csv(HERE / "results.csv", index=False, float_format="%.4f")
    table = gaps(results)
    (HERE / "gaps.md").write_text(markdown_table(table) + "\n")
    print(table.to_string())


if __name__ == "__main__":
    main()
