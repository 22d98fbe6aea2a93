"""Recorder: rows flushed as part files, merged on close, never lost nor doubled by a kill."""

from __future__ import annotations

import itertools
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from fedsim.metrics.recorder import Recorder
from fedsim.metrics.report import load_runs

KILLED_AT_STEP = r"""
import os, signal, sys
from pathlib import Path

import pyarrow.parquet as pq

from fedsim.metrics.recorder import Recorder

path, kill_at, keep = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
steps = 0


def step(operation, half_written=False):
    # The kill_at-th call of a file operation kills the process before it; a write, after
    # it has written half the file.
    def operation_or_kill(*args, **kwargs):
        global steps
        steps += 1
        if steps != kill_at:
            return operation(*args, **kwargs)
        if half_written:
            operation(*args, **kwargs)
            os.truncate(args[1], os.path.getsize(args[1]) // 2)
        os.kill(os.getpid(), signal.SIGKILL)

    return operation_or_kill


if keep == "close":  # a run of rounds 0-2 that then closes its recorder
    recorder = Recorder(path)
    for round_idx in range(3):
        recorder.add(round_idx, "accuracy", round_idx + 0.5)
        recorder.extend(round_idx, "node_accuracy", [round_idx + 0.25, round_idx + 0.75], [0, 1])
        recorder.flush()
for name in ("rename", "replace", "unlink", "remove", "rmdir", "fsync"):
    setattr(os, name, step(getattr(os, name)))
pq.write_table = step(pq.write_table, half_written=True)
if keep == "close":
    recorder.close()
else:
    Recorder(path, keep_through_round=int(keep)).close()
os._exit(0)  # done: skip the teardown, where pyarrow's threads once aborted (SIGABRT)
"""


def record(recorder: Recorder, rounds: range) -> None:
    """Per round, one aggregate row and two node rows, flushed as the engine does."""
    for round_idx in rounds:
        recorder.add(round_idx, "accuracy", round_idx + 0.5)
        recorder.extend(round_idx, "node_accuracy", [round_idx + 0.25, round_idx + 0.75], [0, 1])
        recorder.flush()


def expected(rounds: range) -> list[tuple[int, str, float, int]]:
    """The rows of :func:`record`, sorted; node -1 for an aggregate row."""
    return sorted(
        row
        for round_idx in rounds
        for row in [
            (round_idx, "accuracy", round_idx + 0.5, -1),
            (round_idx, "node_accuracy", round_idx + 0.25, 0),
            (round_idx, "node_accuracy", round_idx + 0.75, 1),
        ]
    )


def rows(frame: pd.DataFrame) -> list[tuple[int, str, float, int]]:
    nodes = frame["node"].astype("Int64").fillna(-1)
    return sorted(zip(frame["round"], frame["metric"], frame["value"], nodes, strict=True))


def killed_at(metrics: Path, step: int, keep: str) -> bool:
    """Close a run of rounds 0-2 (``keep="close"``) or resume one (``keep`` a round) in a
    process killed at the ``step``-th file operation; False if it got through all of them."""
    done = subprocess.run(
        [sys.executable, "-c", KILLED_AT_STEP, str(metrics), str(step), keep],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode in (0, -signal.SIGKILL), done.stderr
    return done.returncode != 0


def test_rows_are_readable_after_each_flush_and_merged_on_close(tmp_path):
    recorder = Recorder(tmp_path / "metrics.parquet")
    recorder.add(0, "accuracy", 0.1)
    recorder.extend(0, "node_accuracy", [0.2, 0.3], nodes=[4, 7])
    recorder.flush()
    partial = pd.read_parquet(tmp_path / "metrics.parquet")
    assert len(partial) == 3
    recorder.add(1, "accuracy", 0.5)
    recorder.flush()
    recorder.close()
    # Steps 0 and 1 flushed, step 2 merged them.
    files = [p.name for p in (tmp_path / "metrics.parquet").iterdir()]
    assert files == ["part-00000-00002.parquet"]
    merged = pd.read_parquet(tmp_path / "metrics.parquet")
    assert merged["round"].tolist() == [0, 0, 0, 1]
    assert merged["metric"].tolist() == ["accuracy", "node_accuracy", "node_accuracy", "accuracy"]
    assert merged["value"].tolist() == [0.1, 0.2, 0.3, 0.5]
    assert merged["node"].isna().tolist() == [True, False, False, True]
    assert merged["node"].dropna().tolist() == [4, 7]


def test_an_existing_metrics_directory_is_never_reused(tmp_path):
    (tmp_path / "metrics.parquet").mkdir()
    with pytest.raises(FileExistsError):
        Recorder(tmp_path / "metrics.parquet")


def test_a_resumed_recorder_drops_later_rounds_and_goes_on_after_the_merge(tmp_path):
    metrics = tmp_path / "metrics.parquet"
    record(Recorder(metrics), range(4))  # killed after round 3, checkpointed after round 1

    recorder = Recorder(metrics, keep_through_round=1)
    assert rows(pd.read_parquet(metrics)) == expected(range(2))
    record(recorder, range(2, 3))
    recorder.close()

    assert rows(pd.read_parquet(metrics)) == expected(range(3))
    assert len(list(metrics.iterdir())) == 1


@pytest.fixture(scope="module")
def killed_closing(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Runs of rounds 0-2 killed at step 1, 2, ... of closing their recorder; the last one
    got through all steps."""
    run_dirs = []
    for step in range(1, 50):
        run_dirs.append(tmp_path_factory.mktemp("killed-closing") / str(step))
        if not killed_at(run_dirs[-1] / "metrics.parquet", step, "close"):
            return run_dirs
    raise AssertionError("closing a recorder took more than 50 file operations")


@pytest.mark.slow
def test_a_kill_at_any_step_of_the_merge_on_close_loses_and_doubles_no_row(
    tmp_path, killed_closing
):
    assert len(killed_closing) > 3, "the merge should take several steps"
    for step, killed in enumerate(killed_closing, start=1):
        run_dir = shutil.copytree(killed, tmp_path / str(step))

        assert rows(load_runs(run_dir)) == expected(range(3)), f"killed at step {step}"
        Recorder(run_dir / "metrics.parquet", keep_through_round=2).close()  # fedsim resume
        assert rows(pd.read_parquet(run_dir / "metrics.parquet")) == expected(range(3))
        assert rows(load_runs(run_dir)) == expected(range(3))


@pytest.mark.slow
@pytest.mark.parametrize("start", ["killed before closing", "killed while closing"])
def test_a_kill_at_any_step_of_a_resumed_recorder_loses_and_doubles_no_row(
    tmp_path, killed_closing, start
):
    if start == "killed before closing":
        start_dir = tmp_path / "start"
        record(Recorder(start_dir / "metrics.parquet"), range(3))
    else:  # the kill that left the most files: the merged file beside those it replaces
        start_dir = max(killed_closing[:-1], key=lambda run_dir: _visible(run_dir))
    for step in itertools.count(1):
        run_dir = shutil.copytree(start_dir, tmp_path / f"resume-{step}")

        killed = killed_at(run_dir / "metrics.parquet", step, "1")

        # Until the resumed data set appears, a reader sees the run as it was killed.
        assert rows(load_runs(run_dir)) in [expected(range(3)), expected(range(2))], step
        Recorder(run_dir / "metrics.parquet", keep_through_round=1).close()
        assert rows(pd.read_parquet(run_dir / "metrics.parquet")) == expected(range(2))
        if not killed:
            break
    assert step > 3, "the merge should take several steps"


def _visible(run_dir: Path) -> int:
    return sum(not file.name.startswith(".") for file in (run_dir / "metrics.parquet").iterdir())


def test_a_merge_killed_by_an_older_fedsim_is_recovered(tmp_path):
    metrics = tmp_path / "metrics.parquet"
    record(Recorder(metrics), range(3))
    # Before crash-safe merges, fedsim wrote every part into .merged.parquet, then deleted
    # the parts; here it was killed after the first delete.
    pd.read_parquet(metrics).to_parquet(metrics / ".merged.parquet")
    (metrics / "part-00000.parquet").unlink()

    assert rows(load_runs(tmp_path)) == expected(range(3))
    Recorder(metrics, keep_through_round=2).close()
    assert rows(pd.read_parquet(metrics)) == expected(range(3))
