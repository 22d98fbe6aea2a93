"""scripts/gpu_check.sh: one line and status 2 without CUDA; its whole check on the CPU."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_check.sh"
PYTHON = {"PYTHON": sys.executable}


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_without_cuda_it_stops_at_once_in_one_line():
    result = subprocess.run(
        ["bash", str(SCRIPT)], capture_output=True, text=True, timeout=60,
        env={**os.environ, **PYTHON},
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert "sees no CUDA device" in result.stderr and result.stdout == ""


@pytest.mark.slow
def test_on_the_cpu_every_check_runs_and_agrees():
    """The same steps at small sizes with --device cpu: parity rows all 'yes', timings."""
    result = subprocess.run(
        ["bash", str(SCRIPT), "--device", "cpu", "--nodes", "100", "--cnn-nodes", "4",
         "--rounds", "1"],
        capture_output=True, text=True, timeout=240,
        env={**os.environ, **PYTHON},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [line for line in result.stdout.splitlines() if line.startswith("| ")]
    parity = [row for row in rows if row.endswith("| yes |") or row.endswith("| NO |")]
    assert len(parity) == 8 and all(row.endswith("| yes |") for row in parity)
    assert any(row.startswith("| D-PSGD MLP, 100 nodes |") for row in rows)
    assert any(row.startswith("| FedAvg LeNet-5, 4 clients |") for row in rows)
