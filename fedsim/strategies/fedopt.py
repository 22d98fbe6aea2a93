"""The FedOpt family: FedAvg whose server applies its optimizer to the clients' average.

Reddi et al., "Adaptive Federated Optimization", ICLR 2021 (FedAdagrad, FedAdam, FedYogi)
and Hsu, Qi and Brown 2019 (FedAvgM).  The pseudo-gradient is the clients' average minus
the global model; clients are weighted uniformly by default, as in the paper (Flower
weights by examples: ``weighting=num_examples``).
"""

from __future__ import annotations

from fedsim.server_optimizers import ServerAdagrad, ServerAdam, ServerMomentum, ServerYogi
from fedsim.strategies.fedavg import FedAvg


class FedAvgM(FedAvg):
    """FedAvg with server momentum: ``server_momentum=0, server_lr=1`` is FedAvg."""

    def __init__(
        self,
        server_lr: float = 1.0,
        server_momentum: float = 0.9,
        sample_size: int | None = 10,
        fraction: float | None = None,
        local_epochs: int | None = 1,
        local_steps: int | None = None,
        weighting: str = "uniform",
        fresh_optimizer: bool = True,
    ) -> None:
        super().__init__(
            sample_size, fraction, local_epochs, local_steps, weighting, fresh_optimizer
        )
        self.server_optimizer = ServerMomentum(server_lr, server_momentum)


class FedAdagrad(FedAvg):
    """FedAvg whose server runs Adagrad with adaptivity ``tau``: ``v <- v + delta^2``."""

    def __init__(
        self,
        server_lr: float = 0.1,
        beta1: float = 0.9,
        tau: float = 1e-3,
        v0: float | None = None,
        sample_size: int | None = 10,
        fraction: float | None = None,
        local_epochs: int | None = 1,
        local_steps: int | None = None,
        weighting: str = "uniform",
        fresh_optimizer: bool = True,
    ) -> None:
        super().__init__(
            sample_size, fraction, local_epochs, local_steps, weighting, fresh_optimizer
        )
        self.server_optimizer = ServerAdagrad(server_lr, beta1, 0.0, tau, v0)


class FedAdam(FedAvg):
    """FedAvg whose server runs Adam: ``v <- beta2 v + (1 - beta2) delta^2``."""

    def __init__(
        self,
        server_lr: float = 0.01,
        beta1: float = 0.9,
        beta2: float = 0.99,
        tau: float = 1e-3,
        v0: float | None = None,
        bias_correction: bool = False,
        sample_size: int | None = 10,
        fraction: float | None = None,
        local_epochs: int | None = 1,
        local_steps: int | None = None,
        weighting: str = "uniform",
        fresh_optimizer: bool = True,
    ) -> None:
        super().__init__(
            sample_size, fraction, local_epochs, local_steps, weighting, fresh_optimizer
        )
        self.server_optimizer = ServerAdam(server_lr, beta1, beta2, tau, v0, bias_correction)


class FedYogi(FedAvg):
    """FedAvg whose server runs Yogi: ``v <- v - (1 - beta2) delta^2 sign(v - delta^2)``."""

    def __init__(
        self,
        server_lr: float = 0.01,
        beta1: float = 0.9,
        beta2: float = 0.99,
        tau: float = 1e-3,
        v0: float | None = None,
        sample_size: int | None = 10,
        fraction: float | None = None,
        local_epochs: int | None = 1,
        local_steps: int | None = None,
        weighting: str = "uniform",
        fresh_optimizer: bool = True,
    ) -> None:
        super().__init__(
            sample_size, fraction, local_epochs, local_steps, weighting, fresh_optimizer
        )
        self.server_optimizer = ServerYogi(server_lr, beta1, beta2, tau, v0)
