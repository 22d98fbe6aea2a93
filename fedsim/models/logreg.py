"""Multinomial logistic regression."""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import nn


def logreg(input_shape: Sequence[int], num_classes: int) -> nn.Module:
    """Flatten, then one linear layer to the class logits (softmax is in the loss)."""
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), num_classes))
