"""Every experiment preset composes and runs a couple of rounds."""

import pandas as pd
import pytest
from conftest import compose_config

from fedsim.config import options
from fedsim.runner import run_job


@pytest.mark.slow
@pytest.mark.parametrize("experiment", options("experiment"))
def test_experiment_preset_runs_two_rounds(experiment, tmp_path):
    summary = run_job(
        compose_config(f"experiment={experiment}", "rounds=2", "eval_every=1"), tmp_path
    )
    assert summary["status"] == "completed"
    rows = pd.read_parquet(tmp_path / "metrics.parquet")
    assert rows["round"].max() == 2
