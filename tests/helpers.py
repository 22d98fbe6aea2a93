"""Tiny hand-computable federations for strategy and backend tests."""

from __future__ import annotations

import re
import shlex
import shutil

import networkx as nx
import numpy as np
import pandas as pd
import torch
from conftest import compose_config

from fedsim.backends.local import LocalBackend, chunk_rows
from fedsim.build import build_simulation, first_plan
from fedsim.config import config_dir
from fedsim.data.datasets import Dataset
from fedsim.engine import Simulation
from fedsim.memory import MemoryEstimate, estimate_memory
from fedsim.metrics.recorder import Recorder
from fedsim.models import logreg
from fedsim.strategies.base import Federation
from fedsim.task import Task
from fedsim.topology import Topology, metropolis_hastings
from fedsim.training.schedule import NodeData
from fedsim.training.sgd import SGD

# Three nodes; node 2 holds its example twice, so FedAvg weighs it 2/4.
TRAIN_X = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0], [1.0, 1.0]])
TRAIN_Y = torch.tensor([0, 1, 1, 1])
SHARDS = [np.array([0]), np.array([1]), np.array([2, 3])]


def zero_logreg_task(lr: float = 0.5) -> Task:
    """Logistic regression on the three nodes above (start with ``started_backend(zero=True)``)."""
    model = logreg((2,), 2)
    dataset = Dataset("hand", TRAIN_X, TRAIN_Y, TRAIN_X, TRAIN_Y, num_classes=2)
    return Task(model, dataset, NodeData.from_shards(SHARDS), SGD(lr=lr, batch_size=4), seed=0)


def hand_gradient(x: torch.Tensor, label: int) -> torch.Tensor:
    """Cross-entropy gradient at zero logits over 2 classes, as [weight (2x2), bias (2)]."""
    error = torch.tensor([0.5, 0.5]) - torch.nn.functional.one_hot(torch.tensor(label), 2)
    return torch.cat([torch.outer(error, x).flatten(), error])


def path_federation(task: Task) -> Federation:
    """Nodes 0 - 1 - 2 on a path.

    Metropolis-Hastings weights: [[2/3, 1/3, 0], [1/3, 1/3, 1/3], [0, 1/3, 2/3]].
    """
    return Federation(
        3, 0, Topology(nx.path_graph(3), metropolis_hastings), task.node_data.num_examples
    )


def memory_of(simulation: Simulation, chunk_size: int | None = None) -> MemoryEstimate:
    """The memory estimate of a built ``simulation``, from its parts as the build passes them
    (``chunk_size`` defaults to the backend's when that is an integer)."""
    configured = chunk_rows(simulation.backend.chunk_size, simulation.task.layout.size)
    if chunk_size is None and isinstance(configured, int):
        chunk_size = configured
    return estimate_memory(
        simulation.task,
        simulation.federation,
        first_plan(simulation.strategy, simulation.federation),
        num_servers=simulation.strategy.num_servers,
        aggregator=simulation.aggregator,
        rounds=simulation.rounds,
        eval_nodes=simulation.eval_nodes,
        private=simulation.privacy is not None,
        vectorise=simulation.backend.vectorise,
        chunk_size=chunk_size,
        messages=simulation.messages,
    )


def run_rounds(strategy, rounds: int = 3, task: Task | None = None, zero: bool = False):
    """A local backend after ``rounds`` rounds of ``strategy`` on the three nodes of the path
    (logistic regression, lr 0.5, unless ``task`` is given; all rows zero at first when
    ``zero``)."""
    task = task or zero_logreg_task(lr=0.5)
    federation = path_federation(task)
    backend = started_backend(task, num_rows=4, zero=zero)
    for round_idx in range(rounds):
        backend.execute(strategy.plan(round_idx, federation), round_idx)
    return backend


def started_backend(task: Task, num_rows: int, zero: bool = False, **options) -> LocalBackend:
    """A local backend holding ``num_rows`` rows, all zero when ``zero`` (for hand computations)."""
    backend = LocalBackend(**options)
    backend.start(task, num_rows)
    if zero:
        backend.params.zero_()
    return backend


# Test settings of a config option, kept in its YAML file as comment lines (invisible to Hydra
# and its schemas; the catalogue reads only the first comment line, the description):
#   # smoke: strategy.sample_size=4     what the option needs to build and run 2 rounds on
#                                       12 nodes of the embedded data (none: the defaults)
#   # ray: strategy.sample_size=4 ...   the Ray-vs-local parity run's settings instead of
#                                       the smoke ones (none: the smoke ones)
# Each line holds Hydra overrides separated by spaces (shell quoting); several lines add up.
# A line that names a strategy (``strategy=dpsgd``: a gossip-only attack) restricts the tests
# that try an option under several strategies to that one (tried_strategies).
SETTINGS_LINE = re.compile(r"#\s*(smoke|ray):(.*)")


def settings_lines(group: str, option: str) -> dict[str, list[str]]:
    """The overrides of the ``# smoke:`` and ``# ray:`` lines of an option's YAML file."""
    found: dict[str, list[str]] = {}
    lines = (config_dir() / group / f"{option}.yaml").read_text().splitlines()
    lines = [line for line in lines if not line.startswith("# @package")]
    for line in lines[1:]:  # after the description (fedsim.catalogue.describe)
        match = SETTINGS_LINE.fullmatch(line)
        if match:
            found.setdefault(match[1], []).extend(shlex.split(match[2]))
    return found


def smoke_settings(group: str, option: str) -> list[str]:
    """What ``group=option`` needs to build and run on 12 nodes of the embedded data."""
    return settings_lines(group, option).get("smoke", [])


def ray_settings(group: str, option: str) -> list[str]:
    """The settings of the Ray-vs-local parity run: the ``# ray:`` line, else the smoke one."""
    lines = settings_lines(group, option)
    return lines.get("ray", lines.get("smoke", []))


def tried_strategies(settings: list[str], strategies: list[str]) -> list[str]:
    """Those of ``strategies`` that a test running an option under each should try: the
    strategy its ``settings`` name (the only one it works with), else all."""
    named = {o.split("=", 1)[1] for o in settings if o.startswith("strategy=")}
    return [strategy for strategy in strategies if not named or strategy in named]


def final_accuracy(tmp_path, name: str, *overrides: str) -> float:
    """The global model's test accuracy after 4 FedAvg rounds of all 12 digits clients."""
    config = compose_config(
        "num_nodes=12", "rounds=4", "eval_every=4", "strategy.sample_size=12", *overrides
    )
    recorder = Recorder(tmp_path / f"{name}.parquet")
    build_simulation(config).run(recorder, progress=False)
    recorder.close()
    rows = pd.read_parquet(tmp_path / f"{name}.parquet")
    return rows.query("metric == 'accuracy' and round == 4").value.item()


def whole_and_resumed(config, tmp_path, killed_after: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The metrics of ``config`` run through, and run again from its first checkpoint onto
    what a run killed after round ``killed_after`` kept (``wall_time_s`` left out of both)."""
    states, whole, again = [], tmp_path / "whole.parquet", tmp_path / "again.parquet"
    recorder = Recorder(whole)
    build_simulation(config).run(recorder, progress=False, checkpoint=states.append)
    recorder.close()
    shutil.copytree(whole, again)
    recorder = Recorder(again, keep_through_round=killed_after)
    build_simulation(config).run(recorder, progress=False, resume=states[0])
    recorder.close()
    first, second = (
        pd.read_parquet(path).query("metric != 'wall_time_s'").reset_index(drop=True)
        for path in (whole, again)
    )
    return first, second
