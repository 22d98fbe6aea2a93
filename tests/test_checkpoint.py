"""Checkpoint and resume: a killed or interrupted run, resumed, equals an uninterrupted one."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import torch

from fedsim import checkpoint
from fedsim.metrics.recorder import Recorder

FEDSIM = [sys.executable, "-m", "fedsim.cli"]
RUN = [
    "strategy=dpsgd", "topology=ring", "num_nodes=40", "rounds=120", "eval_every=1",
    "checkpoint_every=20", "optimizer.momentum=0.9", "progress=false",
]  # fmt: skip


def metrics(run_dir):
    rows = pd.read_parquet(run_dir / "metrics.parquet")
    rows = rows[rows.metric != "wall_time_s"]
    return rows.sort_values(["round", "metric", "node"]).reset_index(drop=True)


MODEST_WITH_CHURN = [
    "strategy=modest", "num_nodes=40", "rounds=120", "eval_every=1", "checkpoint_every=20",
    "strategy.sample_size=5", "strategy.num_aggregators=2", "strategy.success_fraction=0.8",
    "strategy.aggregation_timeout_s=5", "churn=schedule", "churn.crash_count=1",
    "churn.crash_every_s=5", "churn.crash_start_s=10", "churn.join_count=3", "progress=false",
]  # fmt: skip


def start(run_dir, settings=RUN):
    return subprocess.Popen(
        [*FEDSIM, "run", *settings, f"hydra.run.dir={run_dir}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def wait_for_checkpoint(run_dir, process, at_least=60):
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if checkpoint.exists(run_dir) and checkpoint.load(run_dir)["rounds_completed"] >= at_least:
            return
        time.sleep(0.02)
    pytest.fail("the run ended before a mid-way checkpoint could be caught")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("uninterrupted")
    subprocess.run(
        [*FEDSIM, "run", *RUN, f"hydra.run.dir={run_dir}"], check=True, capture_output=True
    )
    return metrics(run_dir)


@pytest.mark.slow
def test_sigkilled_run_resumes_to_the_same_metrics(tmp_path, uninterrupted):
    run_dir = tmp_path / "run"
    process = start(run_dir)
    wait_for_checkpoint(run_dir, process)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "running"
    resumed = subprocess.run([*FEDSIM, "resume", str(run_dir)], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    pd.testing.assert_frame_equal(metrics(run_dir), uninterrupted)
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "completed"


@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])  # Ctrl-C; Slurm, `timeout`
def test_a_stop_signal_checkpoints_between_rounds_and_resumes(tmp_path, uninterrupted, stop):
    run_dir = tmp_path / "run"
    process = start(run_dir)
    wait_for_checkpoint(run_dir, process, at_least=20)
    process.send_signal(stop)
    assert process.wait(timeout=60) == 128 + stop  # 130, 143
    assert "interrupted" in process.stderr.read().decode()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["rounds_completed"] >= 20
    assert checkpoint.load(run_dir)["rounds_completed"] == summary["rounds_completed"]
    resumed = subprocess.run([*FEDSIM, "resume", str(run_dir)], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    pd.testing.assert_frame_equal(metrics(run_dir), uninterrupted)


@pytest.mark.slow
def test_a_killed_modest_run_with_churn_resumes_its_views_clock_and_churn(tmp_path):
    whole = tmp_path / "whole"
    subprocess.run(
        [*FEDSIM, "run", *MODEST_WITH_CHURN, f"hydra.run.dir={whole}"],
        check=True, capture_output=True,
    )  # fmt: skip
    run_dir = tmp_path / "run"
    process = start(run_dir, MODEST_WITH_CHURN)
    wait_for_checkpoint(run_dir, process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    resumed = subprocess.run([*FEDSIM, "resume", str(run_dir)], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    pd.testing.assert_frame_equal(metrics(run_dir), metrics(whole))
    assert metrics(whole).query("metric == 'sim_time_s'")["value"].max() > 100


def test_resume_refuses_other_settings_and_missing_checkpoints(tmp_path):
    run_dir = tmp_path / "run"
    base = ["num_nodes=10", "rounds=2", "strategy.sample_size=3", "progress=false"]
    subprocess.run(
        [*FEDSIM, "run", *base, f"hydra.run.dir={run_dir}"], check=True, capture_output=True
    )
    other = subprocess.run(
        [*FEDSIM, "run", *base, "seed=4", "resume=true", f"hydra.run.dir={run_dir}"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert other.returncode == 2 and "seed differ" in other.stderr
    missing = subprocess.run(
        [*FEDSIM, "run", *base, "resume=true", f"hydra.run.dir={tmp_path / 'none'}"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert missing.returncode == 2 and "holds no checkpoint.pt" in missing.stderr


def test_recorder_drops_rows_after_the_checkpoint_round(tmp_path):
    recorder = Recorder(tmp_path / "metrics.parquet")
    for round_idx in range(5):
        recorder.add(round_idx, "accuracy", round_idx / 10)
        recorder.flush()
    resumed = Recorder(tmp_path / "metrics.parquet", keep_through_round=2)
    resumed.add(3, "accuracy", 0.9)
    resumed.close()
    rows = pd.read_parquet(tmp_path / "metrics.parquet")
    assert rows["round"].tolist() == [0, 1, 2, 3] and rows["value"].tolist()[-1] == 0.9


def test_checkpoints_are_written_atomically(tmp_path):
    checkpoint.save(tmp_path, {"rounds_completed": 1, "params": torch.ones(3)})
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]
    assert torch.equal(checkpoint.load(tmp_path)["params"], torch.ones(3))


@pytest.fixture(scope="module")
def finished_runs(tmp_path_factory):
    """Two small finished runs that differ only in their seed."""
    runs = tmp_path_factory.mktemp("finished")
    for seed in (0, 1):
        subprocess.run(
            [*FEDSIM, "run", *RUN[:3], "rounds=4", "progress=false", f"seed={seed}",
             f"hydra.run.dir={runs / str(seed)}"],
            check=True, capture_output=True,
        )  # fmt: skip
    return runs


class RunsCode:
    """A pickle that calls ``touch`` when it is loaded."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (subprocess.call, (["touch", str(self.marker)],))


def truncated(path):
    path.write_bytes(path.read_bytes()[:200])


BAD_CHECKPOINTS = {
    "runs code": (
        lambda path: torch.save({"rounds_completed": 1, "x": RunsCode(path.parent / "ran")}, path),
        "(refused: a checkpoint holds data, never code)",
    ),
    "empty": (lambda path: path.write_bytes(b""), "is not a fedsim checkpoint"),
    "truncated": (truncated, "is not a fedsim checkpoint: PytorchStreamReader failed"),
    "random bytes": (lambda path: path.write_bytes(bytes(range(256)) * 8), "not a fedsim"),
    "a plain tensor": (lambda path: torch.save(torch.zeros(3), path), "no rounds_completed"),
}


@pytest.mark.parametrize("case", [*BAD_CHECKPOINTS, "another run's"])
def test_a_bad_checkpoint_is_refused_in_one_line_and_the_run_is_left_as_it_was(
    tmp_path, finished_runs, case
):
    run_dir = tmp_path / "run"
    shutil.copytree(finished_runs / "0", run_dir)
    if case == "another run's":
        shutil.copy(finished_runs / "1" / checkpoint.CHECKPOINT, run_dir)
        expected = "seed differ"
    else:
        corrupt, expected = BAD_CHECKPOINTS[case]
        corrupt(run_dir / checkpoint.CHECKPOINT)
    before = {path: path.read_bytes() for path in run_dir.rglob("*") if path.is_file()}
    resumed = subprocess.run([*FEDSIM, "resume", str(run_dir)], capture_output=True, text=True)
    assert resumed.returncode == 2
    assert expected in resumed.stderr and len(resumed.stderr.strip().splitlines()) == 1
    assert not (run_dir / "ran").exists()  # the pickle's code never ran
    after = {path: path.read_bytes() for path in run_dir.rglob("*") if path.is_file()}
    assert after == before


def test_numpy_arrays_and_scalars_of_every_kind_round_trip(tmp_path):
    arrays = [np.zeros(0), np.arange(3), np.ones((2, 2), dtype=bool), np.float32(1.5)]
    checkpoint.save(tmp_path, {"rounds_completed": 1, "arrays": arrays})
    loaded = checkpoint.load(tmp_path)["arrays"]
    for array, back in zip(arrays, loaded, strict=True):
        assert np.array_equal(array, back) and array.dtype == back.dtype


def test_a_checkpoint_holds_data_only_and_loads_without_code(finished_runs):
    path = finished_runs / "0" / checkpoint.CHECKPOINT
    allowed = {f"{g.__module__}.{g.__qualname__}" for g in checkpoint.NUMPY_GLOBALS}
    assert set(torch.serialization.get_unsafe_globals_in_checkpoint(path)) <= allowed
    state = checkpoint.load(finished_runs / "0")
    assert state["rounds_completed"] == 4 and state["config"]["seed"] == 0


FILL_THE_DISK = """
set -u
mount -t tmpfs -o size=64m tmpfs "$DISK"
"$PYTHON" -m fedsim.cli run $RUN hydra.run.dir="$DISK/run" 2> "$OUT/stderr" &
run=$!
while [ ! -f "$DISK/run/checkpoint.pt" ] && kill -0 $run 2> /dev/null; do  # round 20's, of 300
  sleep 0.02
done
dd if=/dev/zero of="$DISK/filler" bs=64k 2> /dev/null
wait $run; echo $? > "$OUT/status"
cp -r "$DISK/run" "$OUT/full"
rm "$DISK/filler"
"$PYTHON" -m fedsim.cli resume "$DISK/run" > /dev/null 2> "$OUT/resume_stderr"
echo $? >> "$OUT/status"
cp -r "$DISK/run" "$OUT/resumed"
"""


@pytest.mark.slow
def test_a_full_disk_ends_in_one_line_and_the_run_resumes_once_there_is_room(
    tmp_path, uninterrupted
):
    """On a small tmpfs of its own (a user and mount namespace: no root needed), the disk
    fills up after the first checkpoint; once room is made the run resumes."""
    disk = tmp_path / "disk"
    disk.mkdir()
    environment = {
        **os.environ, "DISK": str(disk), "OUT": str(tmp_path), "PYTHON": sys.executable,
        "RUN": " ".join(RUN),
    }  # fmt: skip
    subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "bash", "-c", FILL_THE_DISK],
        env=environment, check=True, timeout=600,
    )  # fmt: skip
    status, resumed_status = (tmp_path / "status").read_text().split()
    stderr = (tmp_path / "stderr").read_text()
    assert status == "1", stderr
    assert "no space left" in stderr and "Traceback" not in stderr
    assert len(stderr.strip().splitlines()) == 1
    full = tmp_path / "full"
    assert json.loads((full / "summary.json").read_text())["status"] == "failed: no space left"
    assert not [path.name for path in full.rglob(".*.tmp")]
    assert checkpoint.load(full)["rounds_completed"] >= 20
    assert resumed_status == "0", (tmp_path / "resume_stderr").read_text()
    pd.testing.assert_frame_equal(metrics(tmp_path / "resumed"), uninterrupted)
