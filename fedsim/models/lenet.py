"""LeNet-5 and the group-normalised LeNet of Hsieh et al. used by MoDeST, plus shape helpers."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from fedsim.errors import ConfigError, check


def image_channels(input_shape: Sequence[int], name: str) -> int:
    """The channel count of a ``(channels, height, width)`` input; a ConfigError otherwise."""
    check(
        len(input_shape) == 3 and all(size >= 1 for size in input_shape),
        f"model={name} needs image inputs (channels, height, width), but the data gives "
        f"input_shape={tuple(input_shape)}",
    )
    return input_shape[0]


def flat_size(features: nn.Module, input_shape: Sequence[int], name: str) -> int:
    """Number of features ``features`` makes of one input, from a dry forward pass on zeros.

    Zeros draw no random numbers, so building a model stays as reproducible as before.
    """
    try:
        with torch.no_grad():
            return math.prod(features(torch.zeros(1, *input_shape)).shape[1:])
    except RuntimeError:
        raise ConfigError(
            f"model={name} cannot take inputs of shape {tuple(input_shape)}: "
            "the images are too small for its convolutions and pooling"
        ) from None


def lenet5(input_shape: Sequence[int], num_classes: int, padding: int | None = None) -> nn.Module:
    """LeNet-5 as used in federated learning (LeCun et al. 1998, with ReLU and max-pooling).

    ``conv 5x5 6 -> ReLU -> maxpool 2 -> conv 5x5 16 -> ReLU -> maxpool 2 -> FC 120 -> ReLU ->
    FC 84 -> ReLU -> FC num_classes``.  ``padding`` pads the first convolution; ``None`` pads
    by 2 for images under 32 pixels (MNIST's 28x28 then maps to CIFAR's 32x32 geometry,
    as in the original) and by 0 otherwise.
    """
    channels = image_channels(input_shape, "lenet5")
    if padding is None:
        padding = 2 if min(input_shape[1:]) < 32 else 0
    check(padding >= 0, f"model.padding={padding} must be >= 0 (or null)")
    features = nn.Sequential(
        nn.Conv2d(channels, 6, kernel_size=5, padding=padding),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 16, kernel_size=5),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
    )
    return nn.Sequential(
        *features,
        nn.Linear(flat_size(features, input_shape, "lenet5"), 120),
        nn.ReLU(),
        nn.Linear(120, 84),
        nn.ReLU(),
        nn.Linear(84, num_classes),
    )


def gn_lenet(input_shape: Sequence[int], num_classes: int, groups: int = 2) -> nn.Module:
    """The GN-LeNet of MoDeST's CIFAR-10 task (de Vos et al. 2023; Hsieh et al. 2020).

    Three blocks of ``conv 5x5 (padding 2) -> GroupNorm -> maxpool 3 stride 2 -> ReLU`` with
    32, 32 and 64 channels, then one linear layer (576 -> 10 for CIFAR-10: 85,354
    parameters).  As in the official code (``accdfl/core/models/cifar10.py``, ``GNLeNet``),
    the first block pools before it normalises and the other two normalise before they pool.
    The official model ends in ``log_softmax``; fedsim's cross-entropy takes the logits,
    which gives the same loss.
    """
    channels = image_channels(input_shape, "gn_lenet")
    check(groups >= 1 and 32 % groups == 0, f"model.groups={groups} must divide 32")
    features = nn.Sequential(
        nn.Conv2d(channels, 32, kernel_size=5, padding=2),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.GroupNorm(groups, 32),
        nn.ReLU(),
        nn.Conv2d(32, 32, kernel_size=5, padding=2),
        nn.GroupNorm(groups, 32),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.ReLU(),
        nn.Conv2d(32, 64, kernel_size=5, padding=2),
        nn.GroupNorm(groups, 64),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.ReLU(),
        nn.Flatten(),
    )
    return nn.Sequential(
        *features, nn.Linear(flat_size(features, input_shape, "gn_lenet"), num_classes)
    )
