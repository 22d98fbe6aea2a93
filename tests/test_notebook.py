"""experiments/notebooks/compare_strategies.ipynb runs top to bottom on a fresh sweep.

The kernel is ``python3`` as the environment running pytest provides it: pip installs
ipykernel's kernelspec into ``sys.prefix/share/jupyter/kernels/python3``, whose command
``python -m ipykernel_launcher`` jupyter_client runs with ``sys.executable``. Nothing is
registered per user; ``JUPYTER_PREFER_ENV_PATH`` makes the environment's spec win over a
``python3`` spec some other interpreter may have registered under ``~/.local``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).parents[1] / "experiments" / "notebooks" / "compare_strategies.ipynb"
# Two strategies that fit 6 nodes; ++ because Hydra composes the sweep's primary config with
# the default strategy (FedAvg), which has no num_sampled.
SWEEP = [
    "strategy=s2s,s2a",
    "++strategy.num_sampled=3",
    "seed=0,1",
    "num_nodes=6",
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


@pytest.mark.slow
def test_notebook_runs_on_a_sweep_and_shows_the_table_and_figures(
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
    monkeypatch.setenv("FEDSIM_SWEEP", str(sweep))
    monkeypatch.setenv("JUPYTER_PREFER_ENV_PATH", "1")
    monkeypatch.setenv("JUPYTER_PLATFORM_DIRS", "1")
    notebook = nbformat.read(NOTEBOOK, as_version=4)

    client = NotebookClient(
        notebook, kernel_name="python3", timeout=120, resources={"metadata": {"path": tmp_path}}
    )
    client.execute()

    outputs = [
        output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs
    ]
    printed = "".join(output.get("text", "") for output in outputs)
    assert f"4 runs in {sweep}" in printed
    tables = [
        output.data["text/html"] for output in outputs if "text/html" in output.get("data", {})
    ]
    assert any("strategy=s2s" in table and "accuracy_std" in table for table in tables)
    images = [output for output in outputs if "image/png" in output.get("data", {})]
    assert len(images) == 5  # accuracy per round, per byte, per simulated second, and two more
