"""Reading run directories back: load_runs, report and the ``fedsim report`` command.

The run directories written here also feed the table tests in ``test_tables.py``.
"""

from __future__ import annotations

import fcntl
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import matplotlib.image
import pandas as pd
import pytest
from omegaconf import OmegaConf
from rich.console import Console
from run_dirs import (
    config,
    three_rounds,
    tidy,
    two_strategy_sweep,
    write_run,
    write_sweep,
    write_unreadable_runs,
)

from fedsim.cli import main
from fedsim.metrics.figures import plot_metric
from fedsim.metrics.report import load_runs, report, run_status
from fedsim.metrics.tables import format_summary, summarize


def test_single_run_is_named_dot_and_carries_its_config(tmp_path: Path) -> None:
    runs = load_runs(write_run(tmp_path / "run", three_rounds(0.9)))

    assert len(runs) == 13
    assert set(runs["run"]) == {"."}
    first = runs.iloc[0]
    assert first["strategy"] == "fedavg"
    assert first["overrides"] == "strategy=fedavg seed=0"
    assert first["strategy.sample_size"] == 2
    assert first["optimizer.lr"] == 0.05
    assert first["model.hidden"] == "[64, 32]"
    assert pd.isna(first["optimizer"])  # a group the run did not record
    assert not [column for column in runs if "_target_" in column or "_partial_" in column]
    assert runs["node"].dtype == "Int64"


def test_sweep_has_one_run_per_subdirectory_with_its_seed(tmp_path: Path) -> None:
    runs = load_runs(write_sweep(tmp_path / "sweep"))

    seeds = runs.groupby("run")["seed"].unique()
    assert seeds.to_dict() == {"0": [0], "1": [1], "2": [2]}


def test_nested_runs_are_found_in_natural_order(tmp_path: Path) -> None:
    for name in ["fedavg/10", "fedavg/2", "dsgd/0"]:
        write_run(tmp_path / name, three_rounds(0.9))

    runs = load_runs(tmp_path)

    assert runs["run"].unique().tolist() == ["dsgd/0", "fedavg/2", "fedavg/10"]


def test_metrics_parquet_may_be_a_directory_of_part_files(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    parts = run_dir / "metrics.parquet"
    parts.mkdir(parents=True)
    tidy((0, "accuracy", 0.5, None), (1, "accuracy", 0.6, None)).to_parquet(
        parts / "part-00000.parquet"
    )
    tidy((2, "accuracy", 0.7, None), (2, "node_accuracy", 0.8, 4)).to_parquet(
        parts / "part-00001.parquet"
    )

    runs = load_runs(run_dir)

    assert runs["round"].tolist() == [0, 1, 2, 2]
    assert runs["node"].tolist()[-1] == 4
    assert summarize(runs)["accuracy"].tolist() == [0.7]


def test_a_run_that_has_not_flushed_rows_yet_adds_nothing(tmp_path: Path) -> None:
    write_run(tmp_path / "0", three_rounds(0.9))
    (tmp_path / "1" / "metrics.parquet").mkdir(parents=True)

    runs = load_runs(tmp_path)

    assert runs["run"].unique().tolist() == ["0"]
    assert summarize(runs)["accuracy"].tolist() == [0.9]


def test_killed_run_reads_config_and_overrides_from_hydra_files(tmp_path: Path) -> None:
    run_dir = tmp_path / "killed"
    (run_dir / ".hydra").mkdir(parents=True)
    tidy((0, "accuracy", 0.5, None)).to_parquet(run_dir / "metrics.parquet")
    hydra_config = {**config(seed=7), "eval_every": "${rounds}"}
    OmegaConf.save(OmegaConf.create(hydra_config), run_dir / ".hydra" / "config.yaml")
    OmegaConf.save(OmegaConf.create(["seed=7"]), run_dir / ".hydra" / "overrides.yaml")

    first = load_runs(run_dir).iloc[0]

    assert first["seed"] == 7
    assert first["eval_every"] == 3
    assert first["strategy.sample_size"] == 2
    assert first["overrides"] == "seed=7"
    assert pd.isna(first["strategy"])


def test_killed_run_reads_choices_from_hydra_yaml(tmp_path: Path) -> None:
    run_dir = tmp_path / "killed"
    (run_dir / ".hydra").mkdir(parents=True)
    tidy((0, "accuracy", 0.5, None)).to_parquet(run_dir / "metrics.parquet")
    choices = {"strategy": "dsgd", "topology": "ring", "hydra/launcher": "basic"}
    hydra_yaml = {"hydra": {"run": {"dir": "${now:%Y}"}, "runtime": {"choices": choices}}}
    OmegaConf.save(OmegaConf.create(hydra_yaml), run_dir / ".hydra" / "hydra.yaml")

    runs = load_runs(run_dir)

    assert runs[["strategy", "topology"]].iloc[0].tolist() == ["dsgd", "ring"]
    assert "hydra/launcher" not in runs
    assert runs["overrides"].iloc[0] == ""


def test_a_directory_without_runs_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=f"no metrics.parquet found .*{tmp_path.name}"):
        load_runs(tmp_path)


def test_report_writes_csv_and_figures(tmp_path: Path) -> None:
    out_dir = tmp_path / "report"

    written = report(write_sweep(tmp_path / "sweep"), out_dir=out_dir)

    table = pd.read_csv(out_dir / "report.csv", dtype={"run": str, "overrides": str})
    assert table["run"].tolist() == written.summary["run"].tolist()
    assert table["accuracy"].tolist() == written.summary["accuracy"].tolist() == [0.8, 0.85, 0.9]
    assert table.columns.tolist() == written.summary.columns.tolist()
    figures = ["accuracy_vs_round", "accuracy_vs_bytes", "consensus_distance_vs_round"]
    assert [file.name for file in written.files] == ["report.csv", "report_by_config.csv"] + [
        f"{name}.png" for name in figures
    ]
    for name in figures:  # no node_accuracy_min/max or sim_time_s recorded: no such figures
        height, width, _ = matplotlib.image.imread(out_dir / f"{name}.png").shape
        assert height > 100 and width > 100


def test_report_writes_next_to_the_runs_by_default(tmp_path: Path) -> None:
    run_dir = write_run(tmp_path / "run", three_rounds(0.9))

    written = report(run_dir)

    assert (run_dir / "report.csv").is_file()
    assert (run_dir / "accuracy_vs_bytes.png").stat().st_size > 0
    assert written.by_config is None  # one seed: no table across seeds
    assert not (run_dir / "report_by_config.csv").exists()


def test_topology_metadata_and_label_histograms_are_reported(tmp_path: Path) -> None:
    run_dir = write_run(tmp_path / "run", three_rounds(0.9))
    histograms = pd.DataFrame({"node": [0, 0, 1], "label": [0, 1, 1], "count": [3, 1, 4]})
    histograms.to_parquet(run_dir / "partition.parquet")
    summary = report(run_dir).summary
    assert summary["graph.spectral_gap"].tolist() == [0.25]
    assert summary["graph.degree_mean"].tolist() == [2.0]
    assert matplotlib.image.imread(run_dir / "label_histograms.png").shape[0] > 100


def test_cli_report_with_target_prints_and_writes_both_tables(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # a wide table, whatever the terminal
    sweep, out_dir = two_strategy_sweep(tmp_path / "sweep"), tmp_path / "out"

    assert main(["report", str(sweep), "--out", str(out_dir), "--target", "0.6"]) == 0

    printed = capsys.readouterr().out
    assert "fedsim configurations, mean ± std over seeds" in printed
    assert "rounds to target" in printed
    assert "report_by_config.csv" in printed and "accuracy_vs_round.png" in printed
    per_run = pd.read_csv(out_dir / "report.csv", dtype={"run": str}).set_index("run")
    assert per_run.loc["dpsgd/1", ["rounds_to_target", "bytes_to_target"]].tolist() == [2, 8e6]
    by_config = pd.read_csv(out_dir / "report_by_config.csv")
    assert by_config["rounds_to_target_mean"].tolist() == pytest.approx([4 / 3, 1.0])
    assert not (sweep / "report.csv").exists()


def test_cli_report_refuses_a_target_outside_0_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = write_run(tmp_path / "run", three_rounds(0.9))

    with pytest.raises(SystemExit) as exit_:
        main(["report", str(run_dir), "--target", "80"])

    assert exit_.value.code == 2
    assert "--target must be an accuracy in (0, 1], got 80.0" in capsys.readouterr().err
    assert not (run_dir / "report.csv").exists()


def test_unreadable_runs_are_named_and_left_out_of_the_report(tmp_path: Path) -> None:
    sweep = write_sweep(tmp_path / "sweep")
    damages = write_unreadable_runs(sweep / "damaged")

    written = report(sweep, out_dir=tmp_path / "out")

    assert written.summary["run"].tolist() == ["0", "1", "2"]
    assert pd.read_csv(tmp_path / "out" / "report.csv")["run"].tolist() == [0, 1, 2]
    reasons = {run.run_dir.name: run.reason for run in written.unreadable}
    assert sorted(reasons) == sorted(damages)
    for name, named in damages.items():
        assert named in reasons[name]
        assert "\n" not in reasons[name]
    assert all(run.run_dir.parent == sweep / "damaged" for run in written.unreadable)


def test_load_runs_warns_of_each_unreadable_run_and_loads_the_others(tmp_path: Path) -> None:
    sweep = write_sweep(tmp_path / "sweep")
    damages = write_unreadable_runs(sweep / "damaged")

    with pytest.warns(UserWarning) as caught:
        runs = load_runs(sweep)

    assert runs["run"].unique().tolist() == ["0", "1", "2"]
    skipped = sorted(str(w.message) for w in caught if "unreadable" in str(w.message))
    assert len(skipped) == len(damages)
    for line, name in zip(skipped, sorted(damages), strict=True):
        assert line.startswith(f"skipped unreadable run {sweep / 'damaged' / name}: ")
        assert damages[name] in line


def test_cli_report_names_each_unreadable_run_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sweep = write_sweep(tmp_path / "sweep")
    damages = write_unreadable_runs(sweep / "damaged")

    assert main(["report", str(sweep), "--out", str(tmp_path / "out")]) == 0

    printed = capsys.readouterr()
    lines = printed.err.splitlines()
    assert len(lines) == len(damages)
    for line, name in zip(lines, sorted(damages), strict=True):
        assert line.startswith(f"fedsim: skipped unreadable run {sweep / 'damaged' / name}: ")
    assert "fedsim runs" in printed.out and "report.csv" in printed.out


def test_cli_report_of_unreadable_runs_only_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_unreadable_runs(tmp_path / "damaged")
    write_run(tmp_path / "alone", three_rounds(0.9))
    (tmp_path / "alone" / "summary.json").write_text("{")

    assert main(["report", str(tmp_path / "damaged")]) == 2
    assert main(["report", str(tmp_path / "alone")]) == 2

    damaged, alone = capsys.readouterr().err.splitlines()
    assert damaged.startswith(f"fedsim: no readable run at or below {tmp_path / 'damaged'}: ")
    assert alone.startswith(f"fedsim: no readable run at or below {tmp_path / 'alone'}: ")
    assert alone.endswith(
        "summary.json: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)"
    )
    with pytest.raises(ValueError, match="no readable run at or below"):
        load_runs(tmp_path / "damaged")
    assert not (tmp_path / "alone" / "report.csv").exists()


def test_unreadable_label_histograms_leave_the_rest_of_the_report(tmp_path: Path) -> None:
    run_dir = write_run(tmp_path / "run", three_rounds(0.9))
    (run_dir / "partition.parquet").write_bytes(b"junk")

    with pytest.warns(UserWarning, match="no label histograms: .*partition.parquet"):
        written = report(run_dir)

    assert written.summary["accuracy"].tolist() == [0.9]
    assert not (run_dir / "label_histograms.png").exists()


def test_two_sweeps_make_one_table_and_one_set_of_figures(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # a wide table, whatever the terminal
    first, second = write_sweep(tmp_path / "a"), two_strategy_sweep(tmp_path / "b")
    out_dir = tmp_path / "out"

    assert main(["report", str(first), str(second), "--out", str(out_dir)]) == 0

    table = pd.read_csv(out_dir / "report.csv")
    assert table["run"].tolist() == [
        "a/0", "a/1", "a/2", "b/dpsgd/0", "b/dpsgd/1", "b/dpsgd/2",
        "b/fedavg/0", "b/fedavg/1", "b/fedavg/2",
    ]  # fmt: skip
    printed = capsys.readouterr().out
    assert printed.count("fedsim runs") == 1
    assert "b/dpsgd/2" in printed and "a/0" in printed
    assert (out_dir / "accuracy_vs_bytes.png").is_file()


def test_a_run_given_twice_is_loaded_once_and_several_paths_need_an_out_dir(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sweep = write_sweep(tmp_path / "sweep")

    runs = load_runs(sweep, sweep / "1")

    assert runs["run"].unique().tolist() == ["sweep/0", "sweep/1", "sweep/2"]
    with pytest.raises(SystemExit) as exit_:
        main(["report", str(sweep), str(sweep / "1")])
    assert exit_.value.code == 2
    assert "--out DIR is needed with several PATHs" in capsys.readouterr().err
    with pytest.raises(ValueError, match="out_dir is needed with several paths"):
        report([sweep, sweep / "1"])


def test_cli_report_draws_the_metric_and_x_asked_for_and_names_what_is_recorded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = write_run(tmp_path / "run", three_rounds(0.9))
    out_dir = tmp_path / "out"

    assert (
        main(["report", str(run_dir), "--out", str(out_dir), "--metric", "loss", "--x", "bytes"])
        == 0
    )
    assert main(["report", str(run_dir), "--x", "sim_time_s"]) == 2

    pngs = sorted(path.name for path in out_dir.glob("*.png"))
    assert pngs == ["consensus_distance_vs_bytes.png", "loss_vs_bytes.png"]
    error = capsys.readouterr().err.strip()
    assert error == (
        "fedsim report: error: x 'sim_time_s': no run records sim_time_s; x can be round, bytes"
    )
    assert not (run_dir / "report.csv").exists()


def set_status(run_dir: Path, status: str | None, **entries: object) -> Path:
    summary_file = run_dir / "summary.json"
    if status is None:
        summary_file.unlink()
        return run_dir
    summary = json.loads(summary_file.read_text())
    summary_file.write_text(json.dumps({**summary, "status": status, **entries}))
    return run_dir


def test_a_strategy_counting_ticks_says_so_in_the_table_and_on_the_round_axis(
    tmp_path: Path,
) -> None:
    for strategy, unit in [("dpsgd", "round"), ("gossip", "tick")]:
        run_dir = write_run(tmp_path / strategy, three_rounds(0.9), strategy=strategy)
        set_status(run_dir, "completed", round_unit=unit, stopped_by="budget.bytes")
    runs = load_runs(tmp_path)

    console = Console(width=200, record=True)
    console.print(format_summary(summarize(runs)))
    figure = plot_metric(runs, "accuracy", "round")

    text = console.export_text()
    assert "│ 2 ticks │" in text and "│       2 │" in text
    assert figure is not None
    assert figure.axes[0].get_xlabel() == "round (gossip: tick)"
    assert summarize(runs)["stopped_by"].tolist() == ["budget.bytes"] * 2


@pytest.mark.parametrize(
    ("written", "status"),
    [
        ("completed", "completed"),
        ("stalled", "stalled"),
        ("diverged", "diverged"),
        ("interrupted", "interrupted"),
        ("failed: No space left on device", "failed"),
        ("running", "interrupted"),  # no process holds its lock: killed
        (None, "interrupted"),  # killed before its summary was written
    ],
)
def test_status_says_what_became_of_a_run(tmp_path: Path, written: str | None, status: str) -> None:
    run_dir = set_status(write_run(tmp_path / "run", three_rounds(0.9)), written)
    (run_dir / ".hydra").mkdir()

    assert run_status(run_dir) == status


def test_a_run_whose_sweep_lock_is_held_is_running(tmp_path: Path) -> None:
    sweep = write_sweep(tmp_path / "sweep")
    set_status(sweep / "1", "running")

    with (sweep / ".fedsim.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held = summarize(load_runs(sweep))["status"].tolist()
    released = summarize(load_runs(sweep))["status"].tolist()

    assert held == ["completed", "running", "completed"]
    assert released == ["completed", "interrupted", "completed"]


@pytest.mark.slow
def test_a_killed_run_is_reported_interrupted(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    settings = ["num_nodes=10", "rounds=100000", "eval_every=1", "progress=false"]
    command = [sys.executable, "-m", "fedsim.cli", "run", *settings, f"hydra.run.dir={run_dir}"]
    process = subprocess.Popen(
        command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 120
        while not list(run_dir.glob("metrics.parquet/part-*.parquet")):
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
        running = run_status(run_dir)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)

    assert running == "running"
    assert summarize(load_runs(run_dir))["status"].tolist() == ["interrupted"]
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "running"
