"""MNIST, Fashion-MNIST and CIFAR-10 from tiny files in the real on-disk formats."""

import pickle
import struct
import sys

import numpy as np
import pytest
import torch
from conftest import compose_config

from fedsim.build import build_simulation
from fedsim.data import vision
from fedsim.errors import ConfigError

pytestmark = pytest.mark.vision
torchvision = pytest.importorskip("torchvision")

IDX_MAGIC = {3: 2051, 1: 2049}  # big-endian magic numbers of uint8 images and labels


def write_idx(path, array):
    """An uncompressed IDX file: magic, one big-endian int32 per dimension, then uint8 data."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = struct.pack(f">{1 + array.ndim}i", IDX_MAGIC[array.ndim], *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def write_mnist(root, folder, seed=0):
    """Five train and three test 28x28 images in ``root/folder/raw``; returns them."""
    generator = np.random.default_rng(seed)
    splits = {}
    for split, count in (("train", 5), ("t10k", 3)):
        images = generator.integers(0, 256, (count, 28, 28), dtype=np.uint8)
        labels = generator.integers(0, 10, count, dtype=np.uint8)
        write_idx(root / folder / "raw" / f"{split}-images-idx3-ubyte", images)
        write_idx(root / folder / "raw" / f"{split}-labels-idx1-ubyte", labels)
        splits[split] = (images, labels)
    return splits


def write_cifar10(root, seed=0):
    """Two images per train batch and three test images, as CIFAR-10's python pickles."""
    generator = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    batches = {}
    for name, count in [*((f"data_batch_{i}", 2) for i in range(1, 6)), ("test_batch", 3)]:
        # Rows hold the red, green and blue 32x32 planes one after another.
        data = generator.integers(0, 256, (count, 3072), dtype=np.uint8)
        labels = generator.integers(0, 10, count).tolist()
        with open(folder / name, "wb") as handle:
            pickle.dump({"batch_label": name, "data": data, "labels": labels}, handle)
        batches[name] = (data, labels)
    with open(folder / "batches.meta", "wb") as handle:
        pickle.dump({"label_names": [f"class {i}" for i in range(10)]}, handle)
    return batches


@pytest.mark.parametrize(
    "loader, folder", [(vision.mnist, "MNIST"), (vision.fashion_mnist, "FashionMNIST")]
)
def test_idx_files_round_trip(tmp_path, loader, folder):
    splits = write_mnist(tmp_path, folder)
    data = loader(root=str(tmp_path))
    assert data.input_shape == (1, 28, 28) and data.num_classes == 10
    assert data.train_x.dtype == torch.float32 and data.train_y.dtype == torch.int64
    for (x, y), (images, labels) in zip(
        [(data.train_x, data.train_y), (data.test_x, data.test_y)], splits.values(), strict=True
    ):
        assert torch.equal(x, torch.from_numpy(images[:, None] / 255.0).float())
        assert y.tolist() == labels.tolist()


def test_cifar10_batches_round_trip(tmp_path):
    batches = write_cifar10(tmp_path)
    data = vision.cifar10(root=str(tmp_path))
    assert data.input_shape == (3, 32, 32) and data.num_classes == 10
    train = np.concatenate([batches[f"data_batch_{i}"][0] for i in range(1, 6)])
    assert torch.equal(data.train_x, torch.from_numpy(train.reshape(-1, 3, 32, 32) / 255.0).float())
    assert data.train_y.tolist() == sum((batches[f"data_batch_{i}"][1] for i in range(1, 6)), [])
    test_data, test_labels = batches["test_batch"]
    assert torch.equal(data.test_x.flatten(1), torch.from_numpy(test_data / 255.0).float())
    assert data.test_y.tolist() == test_labels


def test_normalize_standardises_each_channel(tmp_path):
    write_cifar10(tmp_path)
    plain, normalized = (vision.cifar10(str(tmp_path), normalize=flag) for flag in (False, True))
    mean = torch.tensor([0.4914, 0.4822, 0.4465]).view(3, 1, 1)
    std = torch.tensor([0.2470, 0.2435, 0.2616]).view(3, 1, 1)
    assert torch.allclose(normalized.train_x * std + mean, plain.train_x, atol=1e-6)


@pytest.mark.parametrize(
    "loader, expected",
    [
        (vision.mnist, r"MNIST/raw lacks train-images-idx3-ubyte, train-labels-idx1-ubyte"),
        (vision.fashion_mnist, r"FashionMNIST/raw lacks train-images-idx3-ubyte"),
        (vision.cifar10, r"cifar-10-batches-py lacks data_batch_1, .*, batches.meta"),
    ],
)
def test_missing_files_are_named_with_the_download_flag(tmp_path, loader, expected):
    with pytest.raises(ConfigError, match=rf"data.root={tmp_path}: .*{expected}") as error:
        loader(root=str(tmp_path))
    assert "set data.download=true" in str(error.value) and "\n" not in str(error.value)


def test_one_missing_cifar_batch_is_named(tmp_path):
    write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(ConfigError, match=r"cifar-10-batches-py lacks data_batch_3, which"):
        vision.cifar10(root=str(tmp_path))


def test_download_skips_files_that_are_there(tmp_path):
    # No network here: torchvision only downloads when its existence check fails.
    write_mnist(tmp_path, "MNIST"), write_cifar10(tmp_path)
    assert len(vision.mnist(str(tmp_path), download=True).train_y) == 5
    assert len(vision.cifar10(str(tmp_path), download=True).train_y) == 10


def test_without_torchvision_the_extra_is_named(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchvision", None)  # makes `import torchvision` fail
    with pytest.raises(
        ConfigError, match=r"^data=mnist needs torchvision: pip install 'fedsim\[vision\]'$"
    ):
        vision.mnist()


@pytest.mark.parametrize("option", ["mnist", "fashion_mnist", "cifar10"])
def test_composes_from_the_config(tmp_path, option):
    write_mnist(tmp_path, "MNIST"), write_mnist(tmp_path, "FashionMNIST"), write_cifar10(tmp_path)
    config = compose_config(
        f"data={option}", f"data.root={tmp_path}", "num_nodes=5", "strategy.sample_size=5"
    )
    assert build_simulation(config).task.dataset.num_classes == 10
