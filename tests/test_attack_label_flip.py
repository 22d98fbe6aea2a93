"""Label flipping: Byzantine nodes train on their examples relabelled C - 1 - y and send what
they computed; honest nodes, the test split and every metric keep the true labels (spec
byzantine.md §1)."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from fedsim.attacks.label_flip import LabelFlip
from fedsim.build import build_simulation
from fedsim.data.datasets import Dataset
from fedsim.messages import MessageTransforms
from fedsim.metrics.recorder import Recorder


def ten_classes() -> Dataset:
    """Example i has label i and feature i; one test example per class."""
    labels = torch.arange(10)
    features = labels[:, None].float()
    return Dataset("ten", features, labels, features.clone(), labels.clone(), num_classes=10)


def flipping(*nodes: int, num_nodes: int = 3) -> LabelFlip:
    attack = LabelFlip(nodes=list(nodes))
    attack.prepare(num_nodes=num_nodes, seed=0)
    return attack


def shards(*parts: list[int]) -> list[np.ndarray]:
    return [np.array(part, dtype=np.int64) for part in parts]


def test_a_byzantine_nodes_labels_become_nine_minus_y_and_nothing_else_changes():
    dataset = ten_classes()
    partition = shards([0, 1, 2], [3, 4], [5, 6, 7, 8, 9])
    poisoned, trained = flipping(0).poison(dataset, partition)
    assert poisoned.train_y.tolist() == [9, 8, 7, 3, 4, 5, 6, 7, 8, 9]
    assert [shard.tolist() for shard in trained] == [shard.tolist() for shard in partition]
    assert poisoned.train_x is dataset.train_x  # nothing shared: no example copied
    assert poisoned.test_x is dataset.test_x and poisoned.test_y is dataset.test_y
    assert dataset.train_y.tolist() == list(range(10))  # the (cached) data set is untouched


def test_an_example_an_honest_node_also_holds_keeps_its_label_there():
    """Nodes 0 and 1 hold example 2: attacker 0 trains on a flipped copy (index 10)."""
    dataset = ten_classes()
    poisoned, trained = flipping(0).poison(dataset, shards([0, 1, 2], [2, 3], [4, 5]))
    assert [shard.tolist() for shard in trained] == [[0, 1, 10], [2, 3], [4, 5]]
    assert poisoned.train_x[10].tolist() == [2.0]
    assert poisoned.train_y.tolist() == [9, 8, 2, 3, 4, 5, 6, 7, 8, 9, 7]


def test_it_forges_no_message_but_names_its_attackers():
    attack = flipping(1)
    assert MessageTransforms.of([attack]).on("uplink") == ()
    assert MessageTransforms.of([attack]).on("d2d") == ()
    assert attack.byzantine_nodes().tolist() == [1]


def test_a_run_trains_the_attackers_on_flipped_digits_and_only_them(small_config):
    gossip = ("strategy=dpsgd", "topology=ring")
    clean = build_simulation(small_config(*gossip)).task
    attacked = build_simulation(small_config(*gossip, "attack=label_flip", "attack.nodes=[0,3]"))
    attacked = attacked.task
    data = attacked.node_data
    for node in range(6):
        held = data.table[node, : data.counts[node]]
        true = clean.dataset.train_y[held]
        expected = 9 - true if node in (0, 3) else true
        assert attacked.dataset.train_y[held].equal(expected)
    assert data.table.equal(clean.node_data.table)  # no partition shares an example
    assert attacked.dataset.test_y.equal(clean.dataset.test_y)


@pytest.mark.slow
def test_an_attackers_model_differs_from_the_clean_runs_and_metrics_leave_it_out(
    tmp_path, small_config
):
    """Gossip on a ring of six: node 0 flips; every evaluated node is honest."""
    gossip = ("strategy=dpsgd", "topology=ring")
    models = {}
    for name, attack in (("clean", ()), ("attacked", ("attack=label_flip", "attack.nodes=[0]"))):
        simulation = build_simulation(small_config(*gossip, *attack))
        recorder = Recorder(tmp_path / f"{name}.parquet")
        simulation.run(recorder, progress=False)
        recorder.close()
        models[name] = simulation.backend.params[:6]
    assert not torch.allclose(models["clean"][0], models["attacked"][0])
    rows = pd.read_parquet(tmp_path / "attacked.parquet")
    assert set(rows.query("metric == 'node_accuracy'").node) == {1, 2, 3, 4, 5}


@pytest.mark.slow
def test_fedsim_run_with_label_flip_completes_and_names_the_attackers(tmp_path):
    settings = ["attack=label_flip", "num_nodes=10", "rounds=2", "progress=false"]
    subprocess.run(
        [sys.executable, "-m", "fedsim.cli", "run", *settings, f"hydra.run.dir={tmp_path}"],
        check=True,
        capture_output=True,
    )
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "completed" and len(summary["attackers"]) == 2
