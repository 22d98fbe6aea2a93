"""Server optimizers: how a server row moves along the pseudo-gradient of a round."""

from fedsim.server_optimizers.adaptive import ServerAdagrad, ServerAdam, ServerYogi
from fedsim.server_optimizers.base import ServerOptimizer, server_step
from fedsim.server_optimizers.mixing import Mixing
from fedsim.server_optimizers.momentum import ServerMomentum

__all__ = [
    "Mixing",
    "ServerAdagrad",
    "ServerAdam",
    "ServerMomentum",
    "ServerOptimizer",
    "ServerYogi",
    "server_step",
]
