"""Run directories written by hand (metrics, summary, Hydra files) for report tests."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

FEDAVG = [[0.5, 0.7, 0.8], [0.5, 0.7, 0.85], [0.5, 0.7, 0.9]]
DPSGD = [[0.4, 0.6, 0.6], [0.4, 0.5, 0.7], [0.4, 0.6, 0.8]]


def tidy(*records: tuple[int, str, float, int | None]) -> pd.DataFrame:
    """Metric rows ``(round, metric, value, node)`` with the dtypes ``fedsim run`` writes."""
    frame = pd.DataFrame(records, columns=["round", "metric", "value", "node"])
    return frame.astype({"round": "int64", "value": "float64", "node": "Int64"})


def three_rounds(final_accuracy: float) -> pd.DataFrame:
    """Rounds 0-2 of a run; consensus distance is only recorded in rounds 0 and 1."""
    return tidy(
        (0, "accuracy", 0.5, None),
        (0, "loss", 1.0, None),
        (0, "bytes_sent_total", 1e6, None),
        (0, "consensus_distance", 0.4, None),
        (1, "accuracy", 0.7, None),
        (1, "loss", 0.5, None),
        (1, "bytes_sent_total", 2e6, None),
        (1, "consensus_distance", 0.2, None),
        (2, "accuracy", final_accuracy, None),
        (2, "loss", 0.25, None),
        (2, "bytes_sent_total", 3e6, None),
        (2, "node_accuracy", 0.99, 0),
        (2, "node_accuracy", 0.11, 1),
    )


def config(seed: int) -> dict[str, object]:
    return {
        "num_nodes": 3,
        "rounds": 3,
        "seed": seed,
        "strategy": {"_target_": "fedsim.strategies.FedAvg", "sample_size": 2},
        "optimizer": {"_target_": "torch.optim.SGD", "_partial_": True, "lr": 0.05},
        "model": {"hidden": [64, 32]},
    }


def write_run(
    run_dir: Path,
    metrics: pd.DataFrame,
    seed: int = 0,
    strategy: str = "fedavg",
    spectral_gap: float = 0.25,
) -> Path:
    """A finished run as ``fedsim run`` leaves it: metrics.parquet and summary.json."""
    run_dir.mkdir(parents=True)
    metrics.to_parquet(run_dir / "metrics.parquet")
    summary = {
        "status": "completed",
        "rounds_completed": 3,
        "wall_time_s": 1.5,
        "num_parameters": 10,
        "choices": {"strategy": strategy, "topology": "complete", "data": "digits"},
        "overrides": [f"strategy={strategy}", f"seed={seed}"],
        "config": config(seed),
        "final": {"accuracy": float(metrics["value"].iloc[-3])},
        "topology": {"spectral_gap": spectral_gap, "degree_mean": 2.0, "num_components": 1},
    }
    (run_dir / "summary.json").write_text(json.dumps(summary))
    return run_dir


def write_sweep(sweep: Path) -> Path:
    for seed, final_accuracy in enumerate([0.8, 0.85, 0.9]):
        write_run(sweep / str(seed), three_rounds(final_accuracy), seed=seed)
    return sweep


def accuracy_rounds(
    accuracies: list[float], megabytes: float = 1.0, sim_seconds: float | None = None
) -> pd.DataFrame:
    """Round r: the given accuracy, ``r * megabytes`` MB sent, ``0.5 * (r + 1)`` wall seconds
    and, if given, ``r * sim_seconds`` simulated seconds."""
    rows: list[tuple[int, str, float, int | None]] = []
    for round_idx, accuracy in enumerate(accuracies):
        rows += [
            (round_idx, "accuracy", accuracy, None),
            (round_idx, "bytes_sent_total", round_idx * megabytes * 1e6, None),
            (round_idx, "wall_time_s", 0.5 * (round_idx + 1), None),
        ]
        if sim_seconds is not None:
            rows.append((round_idx, "sim_time_s", round_idx * sim_seconds, None))
    return tidy(*rows)


def two_strategy_sweep(root: Path) -> Path:
    """FedAvg (1 MB a round) and D-PSGD (4 MB a round), three seeds each; the graph's
    spectral gap differs between seeds, as a random topology's would."""
    for strategy, accuracies, megabytes in [("fedavg", FEDAVG, 1.0), ("dpsgd", DPSGD, 4.0)]:
        for seed, curve in enumerate(accuracies):
            metrics = accuracy_rounds(curve, megabytes)
            gap = 0.2 + 0.1 * seed
            write_run(root / strategy / str(seed), metrics, seed, strategy, spectral_gap=gap)
    return root


def write_unreadable_runs(root: Path) -> dict[str, str]:
    """One run of each kind of damage below ``root``; returns each run's name and the file
    its reason for being skipped must name."""
    damages = {
        "truncated_part": "metrics.parquet/part-00001.parquet",
        "junk_part": "metrics.parquet/part-00001.parquet",
        "wrong_columns": "metrics.parquet: columns round, accuracy; metric, value, node missing",
        "text_values": "metrics.parquet: columns do not convert",
        "unfinished_summary": "summary.json",
        "summary_not_an_object": "summary.json is a list, not a dict",
        "broken_hydra_config": ".hydra/config.yaml",
    }
    for name in damages:
        write_run(root / name, three_rounds(0.9))
    for name, junk in [("truncated_part", None), ("junk_part", b"not a parquet file\n")]:
        parts = root / name / "metrics.parquet"
        rows = pd.read_parquet(parts)
        parts.unlink()
        parts.mkdir()
        rows.iloc[:4].to_parquet(parts / "part-00000.parquet")
        rows.iloc[4:].to_parquet(parts / "part-00001.parquet")
        whole = (parts / "part-00001.parquet").read_bytes()
        (parts / "part-00001.parquet").write_bytes(junk or whole[: len(whole) // 2])
    pd.DataFrame({"round": [0, 1], "accuracy": [0.5, 0.7]}).to_parquet(
        root / "wrong_columns" / "metrics.parquet"
    )
    text = three_rounds(0.9).astype({"value": "str"}).assign(value="high")
    text.to_parquet(root / "text_values" / "metrics.parquet")
    (root / "unfinished_summary" / "summary.json").write_text("{")
    (root / "summary_not_an_object" / "summary.json").write_text("[1, 2]")
    (root / "broken_hydra_config" / "summary.json").unlink()  # as a run killed early
    (root / "broken_hydra_config" / ".hydra").mkdir()
    (root / "broken_hydra_config" / ".hydra" / "config.yaml").write_text("seed: [0,\n")
    return damages
