"""Strategies: who trains and who mixes with whom, one module per algorithm."""

from fedsim.strategies.base import Federation, Strategy
from fedsim.strategies.dpsgd import DPSGD
from fedsim.strategies.fedavg import FedAvg
from fedsim.strategies.gossip import EventGossip
from fedsim.strategies.gossip_learning import GossipLearning
from fedsim.strategies.modest import FixedServerFL, MoDeST
from fedsim.strategies.semi_decentralized import S2A, S2S, SemiDecentralized

__all__ = [
    "DPSGD",
    "EventGossip",
    "S2A",
    "S2S",
    "FedAvg",
    "Federation",
    "FixedServerFL",
    "GossipLearning",
    "MoDeST",
    "SemiDecentralized",
    "Strategy",
]
