"""The LEAF FEMNIST convolutional network."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from fedsim.errors import check
from fedsim.models.lenet import flat_size, image_channels


def cnn_femnist(input_shape: Sequence[int], num_classes: int, hidden: int = 2048) -> nn.Module:
    """The FEMNIST CNN of LEAF (Caldas et al. 2018), ``hidden=512`` for MoDeST's variant.

    ``conv 5x5 32 (same padding) -> ReLU -> maxpool 2 -> conv 5x5 64 (same) -> ReLU ->
    maxpool 2 -> FC hidden -> ReLU -> FC num_classes``; 3136 features for 28x28 inputs.
    LEAF's ``femnist/cnn.py`` uses 2048 hidden units (6,603,710 parameters for 62 classes);
    MoDeST (de Vos et al. 2023, ``accdfl/core/models/femnist.py``) uses 512 (1,690,046).
    """
    channels = image_channels(input_shape, "cnn_femnist")
    check(hidden >= 1, f"model.hidden={hidden} must be >= 1")
    features = nn.Sequential(
        nn.Conv2d(channels, 32, kernel_size=5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, kernel_size=5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
    )
    return nn.Sequential(
        *features,
        nn.Linear(flat_size(features, input_shape, "cnn_femnist"), hidden),
        nn.ReLU(),
        nn.Linear(hidden, num_classes),
    )
