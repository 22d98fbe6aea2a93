"""The MNIST CNN of the CorN-DSGD experiments (Rodio et al. 2025, official code)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from fedsim.models.lenet import flat_size, image_channels


def cnn_corn(input_shape: Sequence[int], num_classes: int) -> nn.Module:
    """``conv 3x3 32 (pad 1) -> ReLU -> maxpool 2 -> conv 3x3 64 (pad 1) -> ReLU -> maxpool 2
    -> FC 128 -> ReLU -> FC num_classes``: 421,642 parameters on 28x28 MNIST."""
    channels = image_channels(input_shape, "cnn_corn")
    features = nn.Sequential(
        nn.Conv2d(channels, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
    )
    return nn.Sequential(
        features,
        nn.Linear(flat_size(features, input_shape, "cnn_corn"), 128),
        nn.ReLU(),
        nn.Linear(128, num_classes),
    )
