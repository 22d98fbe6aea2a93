"""LIBSVM files written by scikit-learn, in the 1-based format of a9a."""

import numpy as np
import pytest
import torch
from conftest import compose_config
from sklearn.datasets import dump_svmlight_file

from fedsim.build import build_simulation
from fedsim.data.svmlight import svmlight
from fedsim.errors import ConfigError

TRAIN_X = np.array([[1.0, 0.0, 2.0], [0.0, 0.5, 0.0], [3.0, 0.0, 0.0], [0.0, 0.0, 4.0]])
TRAIN_Y = np.array([1, -1, 1, -1])


def write(path, features, labels):
    dump_svmlight_file(features, labels, str(path), zero_based=False)
    return str(path)


def test_dense_features_and_sorted_labels_with_a_test_file(tmp_path):
    train = write(tmp_path / "a9a", TRAIN_X, TRAIN_Y)
    # The test file never uses the last feature; reading both together keeps 3 columns.
    test = write(tmp_path / "a9a.t", np.array([[0.0, 7.0, 0.0]]), np.array([-1]))
    data = svmlight(train, test_path=test)
    assert data.name == "a9a" and data.num_classes == 2
    assert data.train_x.dtype == torch.float32 and data.train_y.dtype == torch.int64
    assert torch.equal(data.train_x, torch.tensor(TRAIN_X, dtype=torch.float32))
    assert data.train_y.tolist() == [1, 0, 1, 0]
    assert data.test_x.tolist() == [[0.0, 7.0, 0.0]] and data.test_y.tolist() == [0]


def test_labels_map_to_their_sorted_order(tmp_path):
    train = write(tmp_path / "train", TRAIN_X, np.array([9, 2, 5, 2]))
    test = write(tmp_path / "test", TRAIN_X[:1], np.array([5]))
    data = svmlight(train, test_path=test)
    assert data.num_classes == 3 and data.train_y.tolist() == [2, 0, 1, 0]
    assert data.test_y.tolist() == [1]


def test_num_features_pads_with_zero_columns(tmp_path):
    data = svmlight(write(tmp_path / "a9a", TRAIN_X, TRAIN_Y), num_features=5, test_fraction=0.5)
    assert data.input_shape == (5,)
    assert data.train_x[:, 3:].abs().sum() == 0


def test_without_a_test_file_the_split_is_stratified_and_fixed(tmp_path):
    features = np.arange(40, dtype=np.float64).reshape(20, 2) + 1
    labels = np.repeat([-1, 1], 10)
    path = write(tmp_path / "data", features, labels)
    data, again = svmlight(path, test_fraction=0.2), svmlight(path, test_fraction=0.2)
    assert len(data.train_y) == 16 and data.test_y.tolist().count(0) == 2
    assert torch.equal(data.test_x, again.test_x)
    everything = torch.cat([data.train_x, data.test_x])
    assert sorted(everything[:, 0].tolist()) == features[:, 0].tolist()


def test_missing_and_unreadable_files_are_named(tmp_path):
    with pytest.raises(ConfigError, match=r"data=svmlight needs data.path=FILE"):
        svmlight()
    with pytest.raises(ConfigError, match=r"data.path=.*nowhere: no such file"):
        svmlight(str(tmp_path / "nowhere"))
    path = write(tmp_path / "a9a", TRAIN_X, TRAIN_Y)
    with pytest.raises(ConfigError, match=r"data.test_path=.*a9a.t: no such file"):
        svmlight(path, test_path=str(tmp_path / "a9a.t"))
    with pytest.raises(
        ConfigError, match=r"data.path=.*a9a: expected LIBSVM.*found n_features was set to 2"
    ):
        svmlight(path, num_features=2)
    with pytest.raises(ConfigError, match=r"data.test_fraction=0.1 cannot split"):
        svmlight(path, test_fraction=0.1)


def test_composes_from_the_config(tmp_path):
    with pytest.raises(ConfigError, match=r"data=svmlight needs data.path=FILE"):
        build_simulation(compose_config("data=svmlight", "num_nodes=2", "strategy.sample_size=2"))
    path = write(tmp_path / "a9a", TRAIN_X, TRAIN_Y)
    config = compose_config(
        "data=svmlight",
        f"data.path={path}",
        "data.test_fraction=0.5",
        "num_nodes=2",
        "strategy.sample_size=2",
    )
    assert build_simulation(config).task.dataset.input_shape == (3,)
