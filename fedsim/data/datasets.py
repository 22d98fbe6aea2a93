"""Data sets, held once as tensors; nodes refer to them by index."""

from __future__ import annotations

import functools
import gzip
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fedsim.errors import check


@dataclass(frozen=True)
class Dataset:
    """A labelled train split and a fixed held-out test split.

    ``train_owners`` gives, for data sets with a natural split (e.g. the writer of each
    FEMNIST character), the owner id of each train example; None otherwise.
    """

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    train_owners: np.ndarray | None = None

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one example."""
        return tuple(self.train_x.shape[1:])

    def to(self, device: torch.device | str) -> Dataset:
        """The same data on ``device``."""
        return Dataset(
            self.name,
            self.train_x.to(device),
            self.train_y.to(device),
            self.test_x.to(device),
            self.test_y.to(device),
            self.num_classes,
            self.train_owners,
        )


@functools.lru_cache(maxsize=8)  # sweeps build many runs from it; its tensors are never modified
def digits(test_fraction: float = 0.2, tile: int = 1, image_size: int | None = None) -> Dataset:
    """scikit-learn's bundled 8x8 digits (1797 images, 10 classes), features scaled to [0, 1].

    The test split is stratified and fixed (independent of the run's seed), so runs with
    different seeds are evaluated on the same examples.  ``tile`` repeats the train split
    that many times, to simulate many nodes on a small data set.  With ``image_size`` the
    examples are images of shape ``(1, image_size, image_size)``, bilinearly resized from
    8x8 (so that models for 28x28 inputs can run on a bundled data set); otherwise they are
    64 flat features.
    """
    check(
        0.01 <= test_fraction <= 0.9,
        f"data.test_fraction={test_fraction} must lie in [0.01, 0.9] "
        "(each split needs every class)",
    )
    check(tile >= 1, f"data.tile={tile} must be an integer >= 1")
    check(
        image_size is None or image_size >= 1,
        f"data.image_size={image_size} must be null (64 flat features) or an integer >= 1",
    )
    features, labels = _digits_arrays()
    train, test = _digits_split(labels, test_fraction)
    features = features / 16.0
    train_x, train_y = np.tile(features[train], (tile, 1)), np.tile(labels[train], tile)
    test_x, test_y = features[test], labels[test]
    return Dataset(
        name="digits",
        train_x=_as_images(torch.as_tensor(train_x, dtype=torch.float32), image_size),
        train_y=torch.as_tensor(train_y, dtype=torch.int64),
        test_x=_as_images(torch.as_tensor(test_x, dtype=torch.float32), image_size),
        test_y=torch.as_tensor(test_y, dtype=torch.int64),
        num_classes=10,
    )


# The default split, drawn by scikit-learn as below and stored: importing scikit-learn costs a
# run more than a second, more than all else it does before its first round but torch.
_DEFAULT_SPLIT = Path(__file__).with_name("digits_split.npz")


def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """``load_digits(return_X_y=True)``, read from scikit-learn's file without importing it."""
    spec = importlib.util.find_spec("sklearn")
    csv = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz"
    if not csv.is_file():  # another layout of scikit-learn: ask it
        from sklearn.datasets import load_digits

        return load_digits(return_X_y=True)
    with gzip.open(csv, mode="rt", encoding="utf-8") as lines:
        data = np.loadtxt(lines, delimiter=",")
    return data[:, :-1], data[:, -1].astype(int)


def _digits_split(labels: np.ndarray, test_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Train and test indices: ``train_test_split(..., stratify=labels, random_state=0)``."""
    if test_fraction == 0.2:
        with np.load(_DEFAULT_SPLIT) as split:
            return split["train"].astype(np.int64), split["test"].astype(np.int64)
    from sklearn.model_selection import train_test_split

    return train_test_split(
        np.arange(len(labels)), test_size=test_fraction, stratify=labels, random_state=0
    )


def _as_images(features: torch.Tensor, image_size: int | None) -> torch.Tensor:
    """Flat 8x8 digits as ``(N, 1, image_size, image_size)`` images; unchanged for None."""
    if image_size is None:
        return features
    images = features.reshape(-1, 1, 8, 8)
    resized = torch.nn.functional.interpolate(
        images, size=(image_size, image_size), mode="bilinear", align_corners=False
    )
    # Bilinear weights are convex, so this only removes float rounding outside [0, 1].
    return resized.clamp(0.0, 1.0).contiguous()
