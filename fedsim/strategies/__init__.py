"""Strategies: who trains and who mixes with whom, one module per algorithm."""

from fedsim.strategies.base import Federation, Strategy
from fedsim.strategies.dpsgd import DPSGD
from fedsim.strategies.fedavg import FedAvg

__all__ = ["DPSGD", "FedAvg", "Federation", "Strategy"]
