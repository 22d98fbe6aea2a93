"""What ``fedsim run`` prints: a summary of this run's metrics, one line per sweep job."""

import os
import subprocess
import sys

import pytest

from fedsim.runner import number, printed_metrics

TINY = ["num_nodes=6", "rounds=1", "eval_every=1", "progress=false", "data.tile=1"]


def printed(*args: str, columns: int, cwd) -> str:
    """What ``fedsim`` prints on stdout in a terminal ``columns`` wide (a real subprocess)."""
    environment = {**os.environ, "COLUMNS": str(columns)}
    done = subprocess.run(
        [sys.executable, "-m", "fedsim.cli", *args],
        cwd=cwd, capture_output=True, text=True, env=environment, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_numbers_share_one_format():
    assert [number(v) for v in (422_800.0, 38_440_000.0, 2.0, 0.45281, 1.9687, 12.345)] == [
        "422,800", "38,440,000", "2", "0.4528", "1.969", "12.35",
    ]  # fmt: skip


def test_counters_that_stayed_zero_are_not_printed():
    zero = ("bytes_control_total", "aggregations_max_node", "bytes_d2d_total", "updates_dropped")
    final = {"accuracy": 0.0, "bytes_sent_total": 10.0, **dict.fromkeys(zero, 0.0)}
    assert printed_metrics(final) == {"accuracy": 0.0, "bytes_sent_total": 10.0}


@pytest.mark.slow
def test_a_fedavg_summary_lists_no_gossip_or_modest_counters(tmp_path):
    run = ["run", *TINY, "strategy.sample_size=3", f"hydra.run.dir={tmp_path / 'run'}"]
    out = printed(*run, columns=60, cwd=tmp_path)
    assert "bytes_sent_total" in out and "accuracy" in out
    for counter in ("bytes_control_total", "aggregations_max_node", "bytes_d2d_total"):
        assert counter not in out
    assert "e+" not in out  # one number format
    assert max(len(line) for line in out.splitlines()) <= 60


@pytest.mark.slow
def test_a_sweep_prints_a_line_per_job_then_one_table(tmp_path):
    sweep = tmp_path / "sweep"
    run = ["run", "-m", *TINY, "strategy.sample_size=3", "seed=0,1", f"hydra.sweep.dir={sweep}"]
    lines = printed(*run, columns=100, cwd=tmp_path).splitlines()
    assert lines[0].startswith("job 0  seed=0  accuracy ") and lines[0].endswith(" s")
    assert lines[1].startswith("job 1  seed=1  accuracy ")
    assert "fedsim sweep: 2 jobs" in lines[2]
    rows = [line for line in lines[3:] if "completed" in line]
    assert len(rows) == 2 and "seed=0" in rows[0] and "seed=1" in rows[1]
    assert not any("metric" in line for line in lines)  # no per-job tables


def test_only_the_basic_launchers_lines_are_left_out():
    from fedsim.runner import sweep_settings

    basic = sweep_settings(["-m", "seed=0,1", "rounds=2"])
    assert basic == [
        "hydra.job.config.override_dirname.exclude_keys=[rounds]",
        "hydra/hydra_logging=disabled",
    ]
    assert "hydra/hydra_logging=disabled" not in sweep_settings(
        ["-m", "hydra/launcher=fedsim_ray", "seed=0,1"]
    )


def test_a_checked_run_writes_the_hydra_files_that_hydra_composing_it_again_writes(tmp_path):
    """``fedsim run`` hands Hydra the config its check composed; Hydra's own path composes
    the same overrides again: the .hydra files agree but for the run directory."""
    script = (
        "import sys\n"
        "from fedsim.cli import main\n"
        "from fedsim.runner import launch\n"
        "out, tiny = sys.argv[1], sys.argv[2:]\n"
        "assert main(['run', *tiny, f'hydra.run.dir={out}/checked']) == 0\n"
        "launch([*tiny, *[f'hydra.run.dir={out}/again'] * 2], False)  # as fedsim run passes it\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path), *TINY, "strategy=fedprox",
         "strategy.sample_size=3"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    for name in ("config.yaml", "overrides.yaml", "hydra.yaml"):
        checked, again = (
            (tmp_path / run / ".hydra" / name).read_text().replace(str(tmp_path / run), "RUN")
            for run in ("checked", "again")
        )
        assert checked == again, name
    assert "strategy: fedprox" in (tmp_path / "checked" / ".hydra" / "hydra.yaml").read_text()
