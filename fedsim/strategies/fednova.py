"""FedNova: FedAvg that normalises each client's update by its amount of local work."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from fedsim import rng
from fedsim.errors import check
from fedsim.plans import Average, Train
from fedsim.strategies.base import Federation
from fedsim.strategies.fedavg import FedAvg

WORK = 1  # the sampling stream's coordinate for each client's drawn local work
NORM_BYTES = 4  # a client's a_i, one float32 sent beside its model


class FedNova(FedAvg):
    """FedNova (Wang et al., "Tackling the Objective Inconsistency Problem in Heterogeneous
    Federated Optimization", NeurIPS 2020).

    Client i takes tau_i local steps (its epochs times its batches per epoch, or
    ``local_steps``); with ``local_max`` set, each client draws its epochs (or steps)
    uniformly from ``local_epochs .. local_max`` every round, as the paper's experiments
    do.  The server normalises: with ``p_i`` the client weights and ``a_i`` the l1 norm of
    the local solver's step weights (tau_i for SGD, ``[tau - rho (1 - rho^tau) / (1 - rho)]
    / (1 - rho)`` with momentum rho restarted each round),
    ``x <- x - tau_eff sum_i p_i (x - y_i) / a_i``, ``tau_eff = sum_i p_i a_i``.  With equal
    work it is FedAvg exactly (but for the a_i each client sends, 4 bytes of control
    traffic).  a_i assumes local SGD: other local optimizers are refused.
    """

    assumes_sgd: ClassVar[bool] = True  # fedsim.build refuses other local optimizers

    def __init__(
        self,
        local_max: int | None = None,
        sample_size: int | None = 10,
        fraction: float | None = None,
        local_epochs: int | None = 1,
        local_steps: int | None = None,
        weighting: str = "num_examples",
    ) -> None:
        super().__init__(sample_size, fraction, local_epochs, local_steps, weighting)
        least = local_epochs if local_epochs is not None else local_steps
        check(
            local_max is None or local_max >= least,
            f"strategy.local_max={local_max} must be >= {least} (the least local work) or null",
        )
        self.local_max = local_max

    def work(self, sampled: np.ndarray, round_idx: int, federation: Federation) -> np.ndarray:
        """Each sampled client's local epochs (or steps) this round."""
        least = self.local_epochs if self.local_epochs is not None else self.local_steps
        if self.local_max is None:
            return np.full(len(sampled), least, dtype=np.int64)
        generator = rng.generator(federation.seed, rng.SAMPLING, round_idx, WORK)
        return generator.integers(least, self.local_max + 1, size=len(sampled))

    def local_training(self, sampled: np.ndarray, round_idx: int, federation: Federation) -> Train:
        work = self.work(sampled, round_idx, federation)
        by_epochs = self.local_epochs is not None
        return Train(
            sampled,
            epochs=work if by_epochs else None,
            steps=None if by_epochs else work,
            fresh_optimizer=True,
        )

    def step_weights(
        self, sampled: np.ndarray, round_idx: int, federation: Federation
    ) -> np.ndarray:
        """``a_i``, the l1 norm of client i's step weights."""
        work, examples = self.work(sampled, round_idx, federation), federation.num_examples[sampled]
        if self.local_epochs is not None:
            steps = work * np.ceil(examples / federation.batch_size)
        else:
            steps = np.where(examples > 0, work, 0)
        rho = federation.momentum
        if not rho:
            return steps.astype(np.float64)
        return (steps - rho * (1 - rho**steps) / (1 - rho)) / (1 - rho)

    def aggregation(self, sampled: np.ndarray, round_idx: int, federation: Federation) -> Average:
        """The normalised average: the server keeps ``1 - sum w_i`` of its model."""
        server = np.array([federation.num_nodes])
        weights = self.client_weights(sampled, federation)
        norms = self.step_weights(sampled, round_idx, federation)
        side_bytes = NORM_BYTES + self.side_bytes()
        if np.all(norms == norms[0]):  # equal work: FedAvg's average
            return Average(sampled, server, weights, side_bytes=side_bytes)
        tau_eff = float(weights @ norms)
        scaled = np.divide(tau_eff * weights, norms, out=np.zeros_like(weights), where=norms > 0)
        sources, kept = np.append(sampled, server), np.append(scaled, 1.0 - scaled.sum())
        return Average(sources, server, kept, side_bytes=side_bytes)
