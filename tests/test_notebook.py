"""experiments/notebooks/compare_strategies.ipynb runs top to bottom on a fresh sweep.

The kernel is ``python3`` as the environment running pytest provides it: pip installs
ipykernel's kernelspec into ``sys.prefix/share/jupyter/kernels/python3``, whose command
``python -m ipykernel_launcher`` jupyter_client runs with ``sys.executable``. Nothing is
registered per user; ``JUPYTER_PREFER_ENV_PATH`` makes the environment's spec win over a
``python3`` spec some other interpreter may have registered under ``~/.local``.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from nbclient import NotebookClient

import fedsim

NOTEBOOK = Path(__file__).parents[1] / "experiments" / "notebooks" / "compare_strategies.ipynb"
SWEEP = [
    "strategy=fedavg,dpsgd",
    "num_nodes=10",
    "rounds=3",
    "eval_every=1",
    "topology=ring",
    "progress=false",
]


def test_notebook_is_committed_without_outputs() -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)

    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and all(not cell.outputs and cell.execution_count is None for cell in code)


def test_notebook_takes_parameters_first_and_uses_only_the_public_api() -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    source = "\n".join(cell.source for cell in code)

    assert "parameters" in code[0].metadata.get("tags", [])
    assert re.findall(r"^(\w+) = ", code[0].source, flags=re.MULTILINE) == ["SWEEPS", "TARGET"]
    used = set(re.findall(r"\bfedsim\.(\w+)", source))
    assert used and used <= set(fedsim.__all__) <= set(dir(fedsim))
    assert not re.search(r"from fedsim|import fedsim\.", source)


@pytest.mark.slow
def test_notebook_runs_on_a_sweep_with_its_parameters_and_shows_tables_and_figures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sweep = tmp_path / "sweep"
    command = [sys.executable, "-m", "fedsim.cli", "run", "-m", *SWEEP]
    result = subprocess.run(
        [*command, f"hydra.sweep.dir={sweep}"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    monkeypatch.setenv("JUPYTER_PREFER_ENV_PATH", "1")
    monkeypatch.setenv("JUPYTER_PLATFORM_DIRS", "1")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    parameters = next(cell for cell in notebook.cells if cell.cell_type == "code")
    parameters.source = f"SWEEPS = [{str(sweep)!r}]\nTARGET = 0.2"  # as papermill injects

    client = NotebookClient(
        notebook, kernel_name="python3", timeout=120, resources={"metadata": {"path": tmp_path}}
    )
    client.execute()

    outputs = [
        output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs
    ]
    printed = "".join(output.get("text", "") for output in outputs)
    assert f"2 runs in {sweep}" in printed
    tables = [
        output.data["text/html"] for output in outputs if "text/html" in output.get("data", {})
    ]
    assert any("strategy=dpsgd" in table and "completed" in table for table in tables)
    assert any("accuracy_mean" in table and "reached_target" in table for table in tables)
    images = [output for output in outputs if "image/png" in output.get("data", {})]
    recorded = set(pd.read_parquet(sweep / "0" / "metrics.parquet")["metric"])
    axes = [name for name, axis in fedsim.X_AXES.items() if axis.metric in {"round", *recorded}]
    assert {"round", "bytes", "sim_time_s"} <= set(axes)
    # accuracy per byte, then accuracy per each x axis, consensus distance, node accuracy
    assert len(images) == 1 + len(axes) + 2
