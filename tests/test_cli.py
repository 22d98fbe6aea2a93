"""`fedsim` as a user runs it: a real subprocess, real Hydra, real files."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from fedsim.config import options

FEDSIM = [sys.executable, "-m", "fedsim.cli"]
SMALL = ["num_nodes=10", "rounds=2", "eval_every=1", "strategy.sample_size=3", "progress=false"]


def fedsim(*args, cwd):
    environment = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    return subprocess.run(
        [*FEDSIM, *args], cwd=cwd, capture_output=True, text=True, env=environment, timeout=300
    )


@pytest.mark.slow
def test_run_writes_metrics_and_summary(tmp_path):
    result = fedsim("run", *SMALL, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "accuracy" in result.stdout
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert summary["choices"]["strategy"] == "fedavg"
    assert "strategy.sample_size=3" in summary["overrides"]
    rows = pd.read_parquet(tmp_path / "run" / "metrics.parquet")
    assert rows["round"].max() == 2


@pytest.mark.slow
@pytest.mark.parametrize(
    "override, message",
    [
        (
            "strategy=fedprocs",
            f"strategy=fedprocs is not an option; choose one of: {', '.join(options('strategy'))}",
        ),
        (
            "strategy.sample_sise=3",
            "strategy.sample_sise is not a setting; did you mean strategy.sample_size?",
        ),
        ("strategy.sample_size=11", "strategy.sample_size=11 must be <= num_nodes=10"),
        ("optimizer.lr=-1", "optimizer.lr=-1.0 must be > 0"),
        ("optimizer.lr=inf", "optimizer.lr=inf must be a finite number"),
        ("network.upload_mbps=nan", "network.upload_mbps=nan must be a finite number (or inf"),
        ("seed=0,1", "a sweep (a,b or range(...)) needs -m"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, override, message):
    result = fedsim("run", *SMALL, override, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == f"fedsim: config error: {message}" or message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_an_earlier_run_is_never_written_over(tmp_path):
    run_dir = tmp_path / "run"
    assert fedsim("run", *SMALL, f"hydra.run.dir={run_dir}", cwd=tmp_path).returncode == 0
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    again = fedsim("run", *SMALL, "seed=5", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert again.returncode == 2
    assert "already holds a run" in again.stderr
    assert before == {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}


@pytest.mark.slow
@pytest.mark.parametrize("artefact", ["summary.json", "checkpoint.pt", "partition.parquet"])
def test_any_run_artefact_makes_a_directory_taken(tmp_path, artefact):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / artefact).write_text("a colleague's")
    again = fedsim("run", *SMALL, f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert again.returncode == 2
    assert f"already holds a run ({artefact})" in again.stderr
    assert [p.name for p in run_dir.iterdir()] == [artefact]
    assert (run_dir / artefact).read_text() == "a colleague's"


@pytest.mark.slow
def test_two_runs_into_one_directory_at_once_leave_the_winners_files(tmp_path):
    run_dir = tmp_path / "run"
    runs = [
        subprocess.Popen(
            [*FEDSIM, "run", *SMALL, "rounds=30", f"seed={seed}", f"hydra.run.dir={run_dir}"],
            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        for seed in (1, 2)
    ]  # fmt: skip
    results = [(run.wait(timeout=300), run.stderr.read()) for run in runs]
    assert sorted(code for code, _ in results) == [0, 2], results
    winner = next(seed for seed, (code, _) in zip((1, 2), results, strict=True) if code == 0)
    loser_message = next(message for code, message in results if code == 2)
    assert "in use by another fedsim run" in loser_message or "already holds a run" in loser_message
    saved = (run_dir / ".hydra" / "overrides.yaml").read_text()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert f"seed={winner}" in saved and summary["config"]["seed"] == winner


@pytest.mark.slow
def test_multirun_sweep_then_report(tmp_path):
    sweep = tmp_path / "sweep"
    result = fedsim(
        "run",
        "-m",
        "num_nodes=10",
        "rounds=2",
        "progress=false",
        "strategy=fedavg,dpsgd",
        "seed=0,1",
        "topology=ring",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert sorted(p.parent.name for p in sweep.rglob("summary.json")) == ["0", "1", "2", "3"]

    report = fedsim("report", str(sweep), cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    table = pd.read_csv(sweep / "report.csv", dtype={"run": str})
    assert len(table) == 4
    assert (sweep / "accuracy_vs_round.png").stat().st_size > 0
    assert (sweep / "accuracy_vs_bytes.png").stat().st_size > 0
    runs = pd.read_parquet(sweep / "0" / "metrics.parquet")
    assert set(runs.metric) >= {"accuracy", "bytes_sent_total"}


@pytest.mark.slow
def test_a_sweep_over_mechanisms_takes_settings_of_the_swept_group(tmp_path):
    # privacy=none, the default Hydra composes the sweep with, has no epsilon or clip
    sweep = tmp_path / "sweep"
    result = fedsim(
        "run", "-m", "num_nodes=6", "rounds=1", "progress=false", "strategy=dpsgd",
        "topology=ring", "privacy=local,decor", "privacy.epsilon=5", "privacy.clip=1",
        f"hydra.sweep.dir={sweep}", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    for job, mechanism in (("0", "local"), ("1", "decor")):
        privacy = json.loads((sweep / job / "summary.json").read_text())["privacy"]
        assert (privacy["mechanism"], privacy["epsilon"], privacy["clip"]) == (mechanism, 5, 1)


def test_only_settings_of_swept_groups_are_deferred_to_each_job():
    from fedsim.runner import settings_of_swept_groups_per_job

    args = ["-m", "privacy=local,corn", "privacy.clip=1", "privacy.epsilon=3,10", "seed=0"]
    assert settings_of_swept_groups_per_job(args) == [
        "-m", "privacy=local,corn", "privacy.clip=choice(1)", "privacy.epsilon=3,10", "seed=0",
    ]  # fmt: skip
    unswept = ["-m", "privacy=corn", "privacy.clip=1", "seed=0,1"]
    assert settings_of_swept_groups_per_job(unswept) == unswept


@pytest.mark.slow
def test_list_shows_every_group_and_option(tmp_path):
    result = fedsim("list", cwd=tmp_path)
    assert result.returncode == 0
    for name in (
        "strategy:",
        "fedavg",
        "dpsgd",
        "topology:",
        "erdos_renyi",
        "partition:",
        "dirichlet",
    ):
        assert name in result.stdout


@pytest.mark.slow
def test_run_help_shows_the_groups_with_their_options_and_the_settings(tmp_path):
    result = fedsim("run", "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for group in ("privacy", "experiment", "attack", "compression"):
        assert f"{group}: {', '.join(options(group))}\n" in result.stdout
    assert "  sample_size: 10\n" in result.stdout
    assert "schema" not in result.stdout.split("== Config ==")[0]  # schemas are no choices


def test_unknown_command_is_refused(tmp_path):
    result = fedsim("train", cwd=tmp_path)
    assert result.returncode == 2 and "unknown command 'train'" in result.stderr


def test_report_of_an_empty_directory_says_so(tmp_path):
    result = fedsim("report", str(tmp_path), cwd=tmp_path)
    assert result.returncode == 2 and "no metrics.parquet" in result.stderr


def test_console_script_is_installed():
    assert (Path(sys.executable).parent / "fedsim").exists()


def test_no_command_prints_usage_and_fails_but_help_succeeds(capsys):
    from fedsim.cli import main

    assert main([]) == 2
    assert capsys.readouterr().err.startswith("usage: fedsim run")
    assert main(["--help"]) == 0
    assert capsys.readouterr().out.startswith("usage: fedsim run")


def test_resume_help_prints_resume_usage(capsys):
    from fedsim.cli import main

    assert main(["resume", "--help"]) == 0
    assert capsys.readouterr().out.startswith("usage: fedsim resume RUN_DIR [key=value ...]")
    assert main(["resume"]) == 2
    assert "usage: fedsim resume" in capsys.readouterr().err


@pytest.mark.parametrize(
    "override, meant", [("strategy.lr=0.1", "optimizer.lr"), ("lr=0.1", "optimizer.lr")]
)
def test_an_unknown_key_suggests_the_setting_of_that_name_in_any_group(override, meant, tmp_path):
    from fedsim.errors import ConfigError
    from fedsim.runner import precheck

    with pytest.raises(ConfigError, match=f"is not a setting; did you mean {meant}\\?"):
        precheck([override, f"hydra.run.dir={tmp_path / 'run'}"])


@pytest.mark.slow
def test_resume_with_more_rounds_extends_a_completed_run_as_if_run_at_once(tmp_path):
    tiny = ["num_nodes=6", "eval_every=1", "progress=false", "strategy.sample_size=3"]
    extended, at_once = tmp_path / "extended", tmp_path / "at_once"
    assert (
        fedsim("run", *tiny, "rounds=1", f"hydra.run.dir={extended}", cwd=tmp_path).returncode == 0
    )
    assert fedsim("resume", str(extended), "rounds=2", cwd=tmp_path).returncode == 0
    assert (
        fedsim("run", *tiny, "rounds=2", f"hydra.run.dir={at_once}", cwd=tmp_path).returncode == 0
    )
    shorter = fedsim("resume", str(extended), "rounds=1", cwd=tmp_path)
    assert shorter.returncode == 2  # not shorter
    assert "the checkpoint is at round 2, outside this run's 0..1" in shorter.stderr
    runs = [pd.read_parquet(run / "metrics.parquet") for run in (extended, at_once)]
    accuracy = [run[run.metric.isin(["accuracy", "loss"])].reset_index(drop=True) for run in runs]
    pd.testing.assert_frame_equal(*accuracy)
    assert accuracy[0]["round"].max() == 2
    summary = json.loads((extended / "summary.json").read_text())
    assert (summary["status"], summary["rounds_completed"]) == ("completed", 2)


def test_readme_tours_every_backend_and_preset_and_sweeps_d_psgd_on_a_sparse_graph():
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    tour = readme.split("## Config tour")[1].split("\n## ")[0]
    for group in ("backend", "experiment", "partition"):
        row = next(line for line in tour.splitlines() if line.startswith(f"| `{group}` |"))
        assert all(f"`{option}`" in row for option in options(group)), group
    sweep = readme[readme.index("fedsim run -m strategy=fedavg,dpsgd") :].split("#")[0]
    assert "topology=regular topology.degree=4" in sweep
    assert "every setting with its default" not in readme  # --help shows the defaults' only
