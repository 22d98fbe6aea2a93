"""MNIST, Fashion-MNIST and CIFAR-10 through torchvision, converted to tensors once.

torchvision is optional (``pip install 'fedsim[vision]'``) and imported only when one of
these data sets is loaded.  The files are read from ``root`` in the layout torchvision's
dataset classes use; nothing is downloaded unless ``download=true``.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from fedsim.data.datasets import Dataset
from fedsim.errors import ConfigError, check

_IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
_CIFAR10_FILES = (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta")
# Per-channel mean and standard deviation of each train split.
_MEAN_STD = {
    "mnist": ((0.1307,), (0.3081,)),
    "fashion_mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
}


def mnist(root: str = "data", download: bool = False, normalize: bool = False) -> Dataset:
    """MNIST handwritten digits: 60000 train and 10000 test images (1, 28, 28), 10 classes.

    Reads ``root/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte``.  Pixels are
    scaled to [0, 1]; ``normalize`` then standardises them with the train split's mean and
    standard deviation.
    """
    torchvision = _import_torchvision("mnist")
    _require_files("mnist", root, "MNIST/raw", _IDX_FILES, download)
    train, test = (
        torchvision.datasets.MNIST(root, train=split, download=download) for split in (True, False)
    )
    return _from_uint8(
        "mnist", train.data[:, None], train.targets, test.data[:, None], test.targets, normalize
    )


def fashion_mnist(root: str = "data", download: bool = False, normalize: bool = False) -> Dataset:
    """Fashion-MNIST (Xiao et al. 2017): 60000 train and 10000 test images (1, 28, 28), 10 classes.

    Reads ``root/FashionMNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte``; pixels as
    in :func:`mnist`.
    """
    torchvision = _import_torchvision("fashion_mnist")
    _require_files("fashion_mnist", root, "FashionMNIST/raw", _IDX_FILES, download)
    train, test = (
        torchvision.datasets.FashionMNIST(root, train=split, download=download)
        for split in (True, False)
    )
    return _from_uint8(
        "fashion_mnist",
        train.data[:, None],
        train.targets,
        test.data[:, None],
        test.targets,
        normalize,
    )


def cifar10(root: str = "data", download: bool = False, normalize: bool = False) -> Dataset:
    """CIFAR-10 (Krizhevsky 2009): 50000 train and 10000 test images (3, 32, 32), 10 classes.

    Reads the python batches ``root/cifar-10-batches-py/{data_batch_1..5,test_batch,
    batches.meta}``.  Pixels are scaled to [0, 1]; ``normalize`` standardises each channel.
    """
    torchvision = _import_torchvision("cifar10")
    _require_files("cifar10", root, "cifar-10-batches-py", _CIFAR10_FILES, download)
    dataset_class = _existence_checked_cifar10(torchvision)
    train, test = (dataset_class(root, train=split, download=download) for split in (True, False))
    return _from_uint8(
        "cifar10",
        torch.from_numpy(train.data).permute(0, 3, 1, 2),
        torch.as_tensor(train.targets),
        torch.from_numpy(test.data).permute(0, 3, 1, 2),
        torch.as_tensor(test.targets),
        normalize,
    )


def _import_torchvision(name: str) -> ModuleType:
    try:
        import torchvision
    except ImportError as error:
        raise ConfigError(f"data={name} needs torchvision: pip install 'fedsim[vision]'") from error
    return torchvision


def _require_files(
    name: str, root: str, subfolder: str, files: tuple[str, ...], download: bool
) -> None:
    """Unless downloading, every file torchvision reads must be in ``root/subfolder``."""
    folder = Path(root) / subfolder
    missing = [file for file in files if not (folder / file).is_file()]
    check(
        download or not missing,
        f"data={name} with data.root={root}: {folder} lacks {', '.join(missing)}, which "
        "torchvision reads; set data.download=true to download them, or data.root to the "
        "directory that holds them",
    )


def _existence_checked_cifar10(torchvision: ModuleType) -> Any:
    """torchvision's CIFAR10, checking that its batch files exist instead of their md5 sums.

    A missing file is still reported (by :func:`_require_files` and by torchvision), but a
    re-packed or generated one, such as the tests' tiny batches, loads.  Downloads still
    verify the archive's md5 sum.
    """
    base = torchvision.datasets.CIFAR10

    class ExistenceCheckedCIFAR10(base):  # type: ignore[misc, valid-type]
        train_list = [[file, None] for file, _ in base.train_list]
        test_list = [[file, None] for file, _ in base.test_list]
        meta = {**base.meta, "md5": None}

    return ExistenceCheckedCIFAR10


def _from_uint8(
    name: str,
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    normalize: bool,
) -> Dataset:
    """uint8 images (N, C, H, W) to float32 in [0, 1], standardised per channel if asked."""
    mean, std = (torch.tensor(values).view(-1, 1, 1) for values in _MEAN_STD[name])

    def convert(images: torch.Tensor) -> torch.Tensor:
        pixels = images.contiguous().to(torch.float32).div_(255.0)
        return pixels.sub_(mean).div_(std) if normalize else pixels

    return Dataset(
        name=name,
        train_x=convert(train_x),
        train_y=train_y.to(torch.int64),
        test_x=convert(test_x),
        test_y=test_y.to(torch.int64),
        num_classes=10,
    )
