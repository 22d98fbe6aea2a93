"""``hydra/launcher=fedsim_ray``: a sweep's jobs run as Ray tasks and land where reports look,
on a Ray that listens on loopback only."""

import json
import subprocess
import sys
import time

import pytest
from test_backend_ray import exposed, listening_addresses

import fedsim


@pytest.mark.slow
def test_a_sweep_runs_its_jobs_as_ray_tasks_on_a_loopback_only_ray(tmp_path):
    sweep = tmp_path / "sweep"
    addresses: set[tuple[str, int]] = set()
    with open(tmp_path / "output", "w") as output:
        process = subprocess.Popen(
            [
                sys.executable, "-m", "fedsim.cli", "run", "-m", "hydra/launcher=fedsim_ray",
                "hydra.launcher.num_cpus=2", "seed=0,1", "rounds=2", "num_nodes=10",
                "strategy.sample_size=3", "progress=false", f"hydra.sweep.dir={sweep}",
            ],
            stdout=output, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 300
            while process.poll() is None and time.monotonic() < deadline:
                addresses |= listening_addresses(process.pid)  # while Ray runs the jobs
                time.sleep(0.1)
            assert process.wait(timeout=1) == 0, (tmp_path / "output").read_text()[-2000:]
        finally:
            process.kill()  # only if the sweep ran past its deadline
    output = (tmp_path / "output").read_text()
    assert "Launching 2 jobs on Ray" in output
    assert "pid=" not in output and "\x1b" not in output  # no worker prefixes, no colour codes
    assert {line.split("  ")[0] for line in output.splitlines() if line.startswith("job ")} == {
        "job 0",
        "job 1",
    }  # one line per job, printed by the driver
    assert len(addresses) >= 4  # GCS, raylet (2), the driver, and the workers of the jobs
    assert exposed(addresses) == set()
    for job in ("0", "1"):
        assert json.loads((sweep / job / "summary.json").read_text())["status"] == "completed"
    runs = fedsim.load_runs(sweep)
    assert sorted(runs["run"].unique()) == ["0", "1"]
    assert sorted(runs["seed"].unique()) == [0, 1]
