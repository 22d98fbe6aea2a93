"""FedAsync: asynchronous FL whose server mixes every arriving model into its own."""

from __future__ import annotations

import numpy as np

from fedsim.errors import check
from fedsim.plans import Average, Train
from fedsim.server_optimizers import Mixing
from fedsim.strategies.asynchronous import AsynchronousServer, Staleness
from fedsim.strategies.fedprox import Proximal


class FedAsync(AsynchronousServer):
    """FedAsync (Xie, Koyejo and Gupta, "Asynchronous Federated Optimization", 2019).

    ``concurrency`` clients train at once, each from the model of version tau it downloaded,
    on its loss plus ``rho/2 ||w - x_tau||^2``; the server mixes each arriving model in,
    ``x <- (1 - alpha_t) x + alpha_t x_new`` with ``alpha_t = alpha S(t - tau)`` computed
    afresh per arrival (never a decaying alpha, Plato's old pitfall) and ``S`` the
    ``staleness`` function: ``constant``, ``polynomial`` ``(s + 1)^-a`` or ``hinge``
    (1 up to ``b``, then ``1 / (a (s - b) + 1)``).  ``alpha=1``, ``concurrency=1`` and
    ``rho=0`` is sequential SGD over clients.
    """

    def __init__(
        self,
        alpha: float = 0.9,
        staleness: str = "polynomial",
        staleness_a: float = 0.5,
        staleness_b: float = 4.0,
        rho: float = 0.005,
        concurrency: int = 10,
        local_epochs: int | None = 1,
        local_steps: int | None = None,
        max_staleness: int | None = None,
        fresh_optimizer: bool = True,
    ) -> None:
        super().__init__(concurrency, local_epochs, local_steps, max_staleness, fresh_optimizer)
        check(0 < alpha <= 1, f"strategy.alpha={alpha} must lie in (0, 1]")
        check(rho >= 0, f"strategy.rho={rho} must be >= 0")
        self.alpha, self.rho = alpha, rho
        self.weight = Staleness(staleness, staleness_a, staleness_b)

    def mixing_weight(self, staleness: int) -> float:
        """``alpha_t = alpha S(staleness)``."""
        return self.alpha * float(self.weight(np.array([staleness]))[0])

    def local_training(self, clients: np.ndarray) -> Train:
        """Local SGD on the loss plus the proximal term towards the downloaded model."""
        train = super().local_training(clients)
        return Train(
            train.nodes,
            epochs=train.epochs,
            steps=train.steps,
            fresh_optimizer=train.fresh_optimizer,
            transforms=(Proximal(self.rho),) if self.rho else (),
        )

    def server_update(
        self, arrived: np.ndarray, staleness: np.ndarray, server: np.ndarray
    ) -> Average:
        alpha = self.mixing_weight(int(staleness[0]))
        return Average(arrived, server, np.ones(1), update=None if alpha == 1 else Mixing(alpha))
