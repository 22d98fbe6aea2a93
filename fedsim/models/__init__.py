"""Models: functions from (input shape, number of classes, hyperparameters) to a torch module."""

from fedsim.models.logreg import logreg
from fedsim.models.mlp import mlp

__all__ = ["logreg", "mlp"]
