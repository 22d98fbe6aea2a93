"""Multi-layer perceptron."""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import nn

from fedsim.errors import check


def mlp(input_shape: Sequence[int], num_classes: int, hidden: Sequence[int] = (128,)) -> nn.Module:
    """Flatten, then ``Linear -> ReLU`` for each hidden width, then a linear classifier."""
    check(
        all(width >= 1 for width in hidden),
        f"model.hidden={list(hidden)} must hold positive widths",
    )
    widths = [math.prod(input_shape), *hidden]
    layers: list[nn.Module] = [nn.Flatten()]
    for fan_in, fan_out in zip(widths[:-1], widths[1:], strict=True):
        layers += [nn.Linear(fan_in, fan_out), nn.ReLU()]
    layers.append(nn.Linear(widths[-1], num_classes))
    return nn.Sequential(*layers)
