"""Aggregators: how a node combines the models it received (the plain mean, or corrected)."""

from fedsim.aggregators.mean import Mean
from fedsim.aggregators.variance_corrected import VarianceCorrected

Aggregator = Mean | VarianceCorrected

__all__ = ["Aggregator", "Mean", "VarianceCorrected"]
