"""FEMNIST from tiny LEAF JSON files written in the real format."""

import json

import numpy as np
import pytest
import torch
from conftest import compose_config

from fedsim.build import build_simulation
from fedsim.data.femnist import femnist
from fedsim.errors import ConfigError


def write_leaf(path, users):
    """A LEAF JSON file; ``users`` maps a writer id to (pixel value, labels)."""
    user_data = {
        user: {"x": [[value] * 784 for _ in labels], "y": labels}
        for user, (value, labels) in users.items()
    }
    num_samples = [len(labels) for _, labels in users.values()]
    content = {"users": list(users), "num_samples": num_samples, "user_data": user_data}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content))


@pytest.fixture
def root(tmp_path):
    # Two train files, writers out of order; writer ids sort as f_0001 < f_0002 < f_0003.
    write_leaf(tmp_path / "train" / "a.json", {"f_0003": (0.25, [0, 61]), "f_0001": (0.5, [7])})
    write_leaf(tmp_path / "train" / "b.json", {"f_0002": (1.0, [3, 4, 5])})
    write_leaf(tmp_path / "test" / "a.json", {"f_0003": (0.75, [1]), "f_0001": (0.0, [2])})
    return tmp_path


def test_images_labels_and_writers(root):
    data = femnist(str(root))
    assert data.input_shape == (1, 28, 28) and data.num_classes == 62
    assert data.train_x.dtype == torch.float32 and data.train_y.dtype == torch.int64
    # Files in name order, writers in file order; owners index the sorted writer ids.
    assert data.train_y.tolist() == [0, 61, 7, 3, 4, 5]
    assert data.train_owners.tolist() == [2, 2, 0, 1, 1, 1]
    assert data.train_x[:, 0, 0, 0].tolist() == [0.25, 0.25, 0.5, 1.0, 1.0, 1.0]
    assert torch.equal(data.train_x[3], torch.ones(1, 28, 28))
    assert data.test_y.tolist() == [1, 2] and data.test_x[:, 0, 5, 5].tolist() == [0.75, 0.0]


def test_missing_files_are_named(tmp_path):
    with pytest.raises(ConfigError, match=r"data.root=.*train/\*\.json.*root/train/\*\.json"):
        femnist(str(tmp_path / "nowhere"))


def test_malformed_inputs_are_named(root):
    write_leaf(root / "train" / "c.json", {"f_0004": (0.0, [1])})
    content = json.loads((root / "train" / "c.json").read_text())
    content["user_data"]["f_0004"]["x"] = [[0.0] * 10]
    (root / "train" / "c.json").write_text(json.dumps(content))
    with pytest.raises(
        ConfigError,
        match=r"train/c.json user f_0004: expected each x a list of 784 .*found one of 10",
    ):
        femnist(str(root))


def test_composes_from_the_config(root):
    simulation = build_simulation(
        compose_config("data=femnist", f"data.root={root}", "num_nodes=3", "strategy.sample_size=3")
    )
    assert simulation.task.dataset.input_shape == (1, 28, 28)
    assert np.array_equal(simulation.task.dataset.train_owners, [2, 2, 0, 1, 1, 1])
