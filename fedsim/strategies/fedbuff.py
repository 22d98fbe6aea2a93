"""FedBuff: asynchronous FL whose server buffers K staleness-weighted updates, then steps."""

from __future__ import annotations

import numpy as np

from fedsim.errors import check
from fedsim.plans import Average
from fedsim.server_optimizers import (
    ServerAdagrad,
    ServerAdam,
    ServerMomentum,
    ServerOptimizer,
    ServerYogi,
)
from fedsim.strategies.asynchronous import BASE, AsynchronousServer, Staleness

SERVER_OPTIMIZERS = ("sgd", "adam", "adagrad", "yogi")


class FedBuff(AsynchronousServer):
    """FedBuff (Nguyen et al., "Federated Learning with Buffered Asynchronous Aggregation",
    AISTATS 2022).

    ``concurrency`` clients train at once from the model they downloaded (version tau) and
    send their update ``y - x_tau``; the server adds each, scaled by ``S(t - tau)``
    (``staleness=polynomial`` with ``staleness_a=0.5``: ``1 / sqrt(1 + s)``), and after
    ``buffer_size`` K arrivals divides the sum by K (Algorithm 1, not by the weights' sum)
    and applies it through its optimizer: ``x <- x + server_lr * mean`` for ``sgd`` (with
    ``server_momentum``, FedAvgM's), or FedOpt's ``adam`` / ``adagrad`` / ``yogi``.
    With equal speeds, ``concurrency = buffer_size``, ``staleness=constant`` and
    ``server_lr=1`` it is FedAvg with uniform weights.  A client whose update waits in the
    buffer is not sampled again until the server applies it (its row holds the update).
    """

    def __init__(
        self,
        concurrency: int = 10,
        buffer_size: int = 5,
        staleness: str = "polynomial",
        staleness_a: float = 0.5,
        staleness_b: float = 4.0,
        server_optimizer: str = "sgd",
        server_lr: float = 1.0,
        server_momentum: float = 0.0,
        beta1: float = 0.9,
        beta2: float = 0.99,
        tau: float = 1e-3,
        local_epochs: int | None = 1,
        local_steps: int | None = None,
        max_staleness: int | None = None,
        fresh_optimizer: bool = True,
    ) -> None:
        super().__init__(concurrency, local_epochs, local_steps, max_staleness, fresh_optimizer)
        check(buffer_size >= 1, f"strategy.buffer_size={buffer_size} must be >= 1")
        self.buffer_size = buffer_size
        self.weight = Staleness(staleness, staleness_a, staleness_b)
        check(
            server_optimizer in SERVER_OPTIMIZERS,
            f"strategy.server_optimizer={server_optimizer!r} is not one of: "
            + ", ".join(SERVER_OPTIMIZERS),
        )
        check(
            server_optimizer == "sgd" or server_momentum == 0,
            f"strategy.server_momentum={server_momentum} applies to server_optimizer=sgd only "
            f"(not {server_optimizer}): set it to 0",
        )
        self.optimizer = self._optimizer(
            server_optimizer, server_lr, server_momentum, beta1, beta2, tau
        )

    @staticmethod
    def _optimizer(
        name: str, lr: float, momentum: float, beta1: float, beta2: float, tau: float
    ) -> ServerOptimizer | None:
        """The server optimizer; None for plain SGD with rate 1 (the mean is the step)."""
        if name == "adam":
            return ServerAdam(lr, beta1, beta2, tau)
        if name == "adagrad":
            return ServerAdagrad(lr, beta1, 0.0, tau)
        if name == "yogi":
            return ServerYogi(lr, beta1, beta2, tau)
        optimizer = ServerMomentum(lr, momentum)
        return None if (lr, momentum) == (1.0, 0.0) else optimizer

    def server_update(
        self, arrived: np.ndarray, staleness: np.ndarray, server: np.ndarray
    ) -> Average:
        weights = self.weight(staleness) / self.buffer_size
        return Average(arrived, server, weights, update=self.optimizer, base=BASE)
