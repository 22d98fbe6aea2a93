"""Strategies: who trains and who mixes with whom, one module per algorithm."""

from fedsim.strategies.base import Federation, Strategy
from fedsim.strategies.dpsgd import DPSGD
from fedsim.strategies.fedavg import FedAvg
from fedsim.strategies.semi_decentralized import S2A, S2S, SemiDecentralized

__all__ = ["DPSGD", "S2A", "S2S", "FedAvg", "Federation", "SemiDecentralized", "Strategy"]
