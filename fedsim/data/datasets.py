"""Data sets, held once as tensors; nodes refer to them by index."""

from __future__ import annotations

import functools
from dataclasses import dataclass

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
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

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
    features, labels = load_digits(return_X_y=True)
    train_x, test_x, train_y, test_y = train_test_split(
        features / 16.0, labels, test_size=test_fraction, stratify=labels, random_state=0
    )
    train_x, train_y = np.tile(train_x, (tile, 1)), np.tile(train_y, tile)
    return Dataset(
        name="digits",
        train_x=_as_images(torch.as_tensor(train_x, dtype=torch.float32), image_size),
        train_y=torch.as_tensor(train_y, dtype=torch.int64),
        test_x=_as_images(torch.as_tensor(test_x, dtype=torch.float32), image_size),
        test_y=torch.as_tensor(test_y, dtype=torch.int64),
        num_classes=10,
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
