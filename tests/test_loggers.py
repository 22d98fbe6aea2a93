"""Loggers: CSV, TensorBoard and W&B files of a run's metrics, and a missing library's error."""

import csv

import pandas as pd
import pytest
from conftest import compose_config

from fedsim.errors import ConfigError
from fedsim.loggers.base import require
from fedsim.loggers.csv_file import CSVLogger
from fedsim.runner import run_job

TINY = [
    "num_nodes=6",
    "strategy.sample_size=3",
    "rounds=4",
    "eval_every=2",
    "model=logreg",
    "eval_nodes=3",
]


def logged_run(tmp_path, *overrides):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    run_job(compose_config(*TINY, *overrides), run_dir)
    rows = pd.read_parquet(run_dir / "metrics.parquet")
    return run_dir, rows[rows.node.isna()].pivot(index="round", columns="metric", values="value")


def read_csv(path):
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_csv_has_a_row_per_evaluation_equal_to_the_parquet_metrics(tmp_path):
    run_dir, metrics = logged_run(tmp_path, "logger=csv")
    table = pd.read_csv(run_dir / "metrics.csv").set_index("round")
    assert table.index.tolist() == [0, 2, 4]
    pd.testing.assert_frame_equal(table[metrics.columns], metrics, check_names=False)


def test_csv_widens_for_a_late_metric_and_a_resumed_run_drops_later_rows(tmp_path):
    logger = CSVLogger()
    logger.start(tmp_path, {})
    logger.log(0, {"accuracy": 0.1})
    logger.log(1, {"accuracy": 0.5, "staleness_0": 3.0})
    logger.log(2, {"accuracy": 0.7, "staleness_0": 4.0})
    logger.close()
    rows = read_csv(tmp_path / "metrics.csv")
    assert [row["staleness_0"] for row in rows] == ["", "3.0", "4.0"]
    logger.start(tmp_path, {}, resumed_round=1)  # as a run resumed after round 1
    logger.log(2, {"accuracy": 0.8, "staleness_0": 5.0})
    logger.close()
    rows = read_csv(tmp_path / "metrics.csv")
    assert [(row["round"], row["accuracy"]) for row in rows] == [
        ("0", "0.1"),
        ("1", "0.5"),
        ("2", "0.8"),
    ]


def test_tensorboard_event_files_read_back_as_the_runs_metrics(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir, metrics = logged_run(tmp_path, "logger=tensorboard")
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    assert {"accuracy", "loss", "bytes_sent_total", "local_steps"} <= set(events.Tags()["scalars"])
    accuracy = events.Scalars("accuracy")
    assert [event.step for event in accuracy] == [0, 2, 4]
    assert [event.value for event in accuracy] == pytest.approx(metrics["accuracy"].tolist())


def test_wandb_offline_writes_a_run_directory(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    from fedsim.loggers.wandb import WandbLogger

    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "config"))  # not the user's
    logger = WandbLogger()
    logger.start(tmp_path, {"num_nodes": 6})
    logger.log(0, {"accuracy": 0.25})
    logger.close()
    (run,) = (tmp_path / "wandb").glob("offline-run-*")
    assert run.name.startswith("offline-run-") and list(run.glob("*.wandb"))


def test_a_missing_library_names_the_extra_to_install():
    with pytest.raises(ConfigError, match=r"pip install 'fedsim\[tensorboard\]'$"):
        require("fedsim_no_such_module", "tensorboard", "tensorboard")


def test_bad_logger_settings_are_refused_before_the_run(tmp_path):
    with pytest.raises(ConfigError, match="logger.filename='out.txt' must be a file name"):
        logged_run(tmp_path, "logger=csv", "logger.filename=out.txt")
    assert not (tmp_path / "run" / "metrics.parquet").exists()
