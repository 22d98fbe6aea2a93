"""Tables of loaded runs: summarize, reach_target, aggregate_seeds and their rendering."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from rich.console import Console
from run_dirs import (
    accuracy_rounds,
    three_rounds,
    two_strategy_sweep,
    write_run,
    write_sweep,
)

from fedsim.metrics.report import load_runs
from fedsim.metrics.tables import (
    aggregate_seeds,
    format_by_config,
    format_summary,
    reach_target,
    summarize,
)


def test_summarize_takes_the_last_round_of_each_aggregate_metric(tmp_path: Path) -> None:
    summary = summarize(load_runs(write_sweep(tmp_path / "sweep")))

    assert summary["run"].tolist() == ["0", "1", "2"]
    assert summary["overrides"].tolist() == [f"strategy=fedavg seed={seed}" for seed in range(3)]
    assert summary["accuracy"].tolist() == [0.8, 0.85, 0.9]
    assert summary["loss"].tolist() == [0.25] * 3
    assert summary["bytes_sent_total"].tolist() == [3e6] * 3
    assert summary["consensus_distance"].tolist() == [0.2] * 3  # last recorded in round 1
    assert summary["rounds"].tolist() == [2] * 3
    assert "node_accuracy" not in summary


def test_format_summary_rounds_numbers_and_prints_overrides_verbatim(tmp_path: Path) -> None:
    summary = pd.DataFrame(
        {
            "run": ["0"],
            "overrides": ["model.hidden=[64,64]"],
            "accuracy": [0.912345],
            "loss": [0.30001],
            "bytes_sent_total": [2_500_000.0],
            "rounds": [19],
        }
    )
    console = Console(width=120, record=True)

    console.print(format_summary(summary))

    text = console.export_text()
    for shown in ["model.hidden=[64,64]", "0.9123", "0.3", "2.50", "19", "bytes sent (MB)"]:
        assert shown in text


def test_summarize_carries_each_run_settings(tmp_path: Path) -> None:
    summary = summarize(load_runs(write_sweep(tmp_path / "sweep")))

    assert summary["seed"].tolist() == [0, 1, 2]
    assert summary["strategy"].tolist() == ["fedavg"] * 3
    assert summary["strategy.sample_size"].tolist() == [2] * 3
    assert summary["config.rounds"].tolist() == [3] * 3  # the setting; "rounds" is measured
    assert summary["rounds"].tolist() == [2] * 3
    assert summary.columns[:4].tolist() == ["run", "overrides", "status", "accuracy"]


def test_aggregate_seeds_gives_mean_and_std_per_configuration(tmp_path: Path) -> None:
    summary = summarize(load_runs(two_strategy_sweep(tmp_path)))

    table = aggregate_seeds(summary)

    assert table.columns[:4].tolist() == ["overrides", "strategy", "seeds", "runs"]
    assert table["overrides"].tolist() == ["strategy=dpsgd", "strategy=fedavg"]
    assert table["seeds"].tolist() == [3, 3]
    assert table["runs"].tolist() == ["dpsgd/0 dpsgd/1 dpsgd/2", "fedavg/0 fedavg/1 fedavg/2"]
    assert table["accuracy_mean"].tolist() == pytest.approx([0.7, 0.85])
    assert table["accuracy_std"].tolist() == pytest.approx([0.1, 0.05])
    assert table["bytes_sent_total_mean"].tolist() == [8e6, 2e6]
    assert table["bytes_sent_total_std"].tolist() == [0.0, 0.0]
    assert table["graph.spectral_gap_mean"].tolist() == pytest.approx([0.3, 0.3])
    assert "seed" not in table and "seed_mean" not in table
    assert table["optimizer.lr"].tolist() == [0.05, 0.05]
    columns = table.columns.tolist()
    assert columns.index("optimizer.lr") > columns.index("accuracy_std")  # shared ones last


def test_one_seed_per_configuration_has_no_std(tmp_path: Path) -> None:
    write_run(tmp_path / "a", accuracy_rounds([0.5, 0.6]), seed=0, strategy="fedavg")
    write_run(tmp_path / "b", accuracy_rounds([0.5, 0.7]), seed=0, strategy="dpsgd")

    table = aggregate_seeds(summarize(load_runs(tmp_path)))

    assert table["seeds"].tolist() == [1, 1]
    assert table["accuracy_mean"].tolist() == [0.6, 0.7]
    assert table["accuracy_std"].isna().all()


def test_reach_target_gives_the_first_round_and_its_bytes_and_seconds(tmp_path: Path) -> None:
    runs = load_runs(two_strategy_sweep(tmp_path))

    reached = reach_target(runs, 0.85)

    assert reached.columns.tolist() == ["rounds_to_target", "bytes_to_target", "seconds_to_target"]
    fedavg = reached.loc[["fedavg/0", "fedavg/1", "fedavg/2"]]
    assert fedavg["rounds_to_target"].tolist()[1:] == [2, 2]  # 0.85 counts as reached
    assert fedavg["bytes_to_target"].tolist()[1:] == [2e6, 2e6]
    assert fedavg["seconds_to_target"].tolist()[1:] == [1.5, 1.5]
    assert fedavg.loc["fedavg/0"].isna().all()
    assert reached.loc[["dpsgd/0", "dpsgd/1", "dpsgd/2"]].isna().all(axis=None)


def test_reach_target_reads_simulated_time_when_recorded(tmp_path: Path) -> None:
    write_run(tmp_path / "0", accuracy_rounds([0.5, 0.9, 0.95], sim_seconds=30.0))

    reached = reach_target(load_runs(tmp_path), 0.9)

    assert reached.loc["0"].to_dict() == {
        "rounds_to_target": 1,
        "bytes_to_target": 1e6,
        "seconds_to_target": 1.0,
        "sim_seconds_to_target": 30.0,
    }


@pytest.mark.parametrize("target", [0.0, 1.5, -0.2])
def test_reach_target_names_the_legal_range(tmp_path: Path, target: float) -> None:
    runs = load_runs(write_run(tmp_path / "run", three_rounds(0.9)))

    with pytest.raises(ValueError, match=rf"target={target} must be an accuracy in \(0, 1\]"):
        reach_target(runs, target)


def test_targets_per_configuration_count_the_seeds_that_reached(tmp_path: Path) -> None:
    runs = load_runs(two_strategy_sweep(tmp_path))

    table = aggregate_seeds(summarize(runs, target=0.6)).set_index("strategy")

    # D-PSGD reaches 0.6 in rounds 1, 2, 1 (4, 8, 4 MB; 1.0, 1.5, 1.0 s); FedAvg in round 1.
    assert table.loc["dpsgd", "rounds_to_target_mean"] == pytest.approx(4 / 3)
    assert table.loc["dpsgd", "rounds_to_target_std"] == pytest.approx((1 / 3) ** 0.5)
    assert table.loc["dpsgd", "bytes_to_target_mean"] == pytest.approx(16e6 / 3)
    assert table.loc["dpsgd", "seconds_to_target_mean"] == pytest.approx(3.5 / 3)
    assert table.loc["fedavg", "rounds_to_target_mean"] == 1
    assert table["reached_target"].tolist() == [3, 3]
    partly = aggregate_seeds(summarize(runs, target=0.85)).set_index("strategy")
    assert partly["reached_target"].to_dict() == {"dpsgd": 0, "fedavg": 2}
    assert partly[["rounds_to_target_mean", "bytes_to_target_mean"]].isna().all(axis=None)


def test_format_by_config_shows_mean_std_and_who_reached(tmp_path: Path) -> None:
    summary = summarize(load_runs(two_strategy_sweep(tmp_path)), target=0.85)
    console = Console(width=200, record=True)

    console.print(format_by_config(aggregate_seeds(summary)))

    text = console.export_text()
    for shown in ["strategy=fedavg", "0.8500 ± 0.05", "0.7000 ± 0.1", "reached by 2/3"]:
        assert shown in text
    assert "not reached" in text
