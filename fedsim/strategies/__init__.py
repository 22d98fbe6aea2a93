"""Strategies: who trains and who mixes with whom, one module per algorithm.

Each is imported when first asked for (``fedsim.strategies.FedAvg``): a run loads the one it
uses, not every algorithm's dependencies (networkx, scipy).
"""

import importlib
from typing import Any

from fedsim.strategies.base import Federation, Strategy

_MODULES = {
    "DPSGD": "dpsgd",
    "EventGossip": "gossip",
    "FedAvg": "fedavg",
    "FixedServerFL": "modest",
    "GossipLearning": "gossip_learning",
    "MoDeST": "modest",
    "S2A": "semi_decentralized",
    "S2S": "semi_decentralized",
    "SemiDecentralized": "semi_decentralized",
}

__all__ = ["Federation", "Strategy", *_MODULES]


def __getattr__(name: str) -> Any:
    if name not in _MODULES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_MODULES[name]}"), name)
