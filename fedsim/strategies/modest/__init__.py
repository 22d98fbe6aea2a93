"""MoDeST (decentralized sampling) and the FL baseline it was compared with."""

from fedsim.strategies.modest.fixed_server import FixedServerFL
from fedsim.strategies.modest.modest import MoDeST

__all__ = ["FixedServerFL", "MoDeST"]
