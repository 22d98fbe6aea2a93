"""``hydra/launcher=fedsim_ray``: a sweep's jobs run as Ray tasks and land where reports look."""

import json
import subprocess
import sys

import pytest

import fedsim


@pytest.mark.slow
def test_a_sweep_runs_its_jobs_as_ray_tasks(tmp_path):
    sweep = tmp_path / "sweep"
    done = subprocess.run(
        [
            sys.executable, "-m", "fedsim.cli", "run", "-m", "hydra/launcher=fedsim_ray",
            "hydra.launcher.num_cpus=2", "seed=0,1", "rounds=2", "num_nodes=10",
            "strategy.sample_size=3", "progress=false", f"hydra.sweep.dir={sweep}",
        ],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Launching 2 jobs on Ray" in done.stderr + done.stdout
    for job in ("0", "1"):
        assert json.loads((sweep / job / "summary.json").read_text())["status"] == "completed"
    runs = fedsim.load_runs(sweep)
    assert sorted(runs["run"].unique()) == ["0", "1"]
    assert sorted(runs["seed"].unique()) == [0, 1]
