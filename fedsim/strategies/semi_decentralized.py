"""Semi-decentralized learning: gossip inside components plus a periodic server average.

Rodio, Neglia, Chen and Larsson, "A Unified Convergence Analysis for Semi-Decentralized
Learning: Sampled-to-Sampled vs. Sampled-to-All Communication" (AAAI 2026,
arXiv:2511.11560).  Each round every device takes its local step(s), then mixes with its
neighbours through the symmetric doubly stochastic W (which never crosses components);
every ``server_period`` rounds the server averages ``num_sampled`` devices drawn uniformly
without replacement from all n, ignoring components, and sends the average back.
"""

from __future__ import annotations

from abc import abstractmethod

import numpy as np

from fedsim import rng
from fedsim.errors import check
from fedsim.plans import Average, Gossip, RoundPlan, Train
from fedsim.strategies.base import Federation, SampleSize, Strategy, local_work


class SemiDecentralized(Strategy):
    """Local step -> D2D gossip -> (every H rounds) server average of K sampled devices.

    Subclasses say who receives the average (:meth:`receivers`).  The evaluated global
    model is the average of all devices (the server keeps no model of its own).
    """

    num_servers = 1
    uses_topology = True

    def __init__(
        self,
        num_sampled: int | None = 20,
        sampling_rate: float | None = None,
        server_period: int = 5,
        local_epochs: int | None = None,
        local_steps: int | None = 1,
    ) -> None:
        self.sampling = SampleSize(num_sampled, sampling_rate, ("num_sampled", "sampling_rate"))
        check(server_period >= 1, f"strategy.server_period={server_period} must be >= 1")
        self.server_period = server_period
        self.local_epochs, self.local_steps = local_work(local_epochs, local_steps)

    def validate(self, federation: Federation) -> None:
        self.sampling.check_fits(federation.num_nodes)
        federation.topology.require(self.name, doubly_stochastic=True, symmetric=True)

    @property
    def name(self) -> str:
        return f"strategy={type(self).__name__.lower()}"

    def plan(self, round_idx: int, federation: Federation) -> RoundPlan:
        devices = np.arange(federation.num_nodes)
        steps: list = [
            Train(devices, epochs=self.local_epochs, steps=self.local_steps, fresh_optimizer=False),
            Gossip(federation.topology.mixing(round_idx)),
        ]
        if (round_idx + 1) % self.server_period == 0:
            generator = rng.generator(federation.seed, rng.SAMPLING, round_idx)
            size = self.sampling.of(federation.num_nodes)
            sampled = np.sort(generator.choice(federation.num_nodes, size, replace=False))
            server = np.array([federation.num_nodes])
            steps += [
                Average(sources=sampled, targets=server, weights=np.full(size, 1.0 / size)),
                Average(
                    sources=server, targets=self.receivers(sampled, devices), weights=np.ones(1)
                ),
            ]
        return RoundPlan(steps=tuple(steps))

    @abstractmethod
    def receivers(self, sampled: np.ndarray, devices: np.ndarray) -> np.ndarray:
        """The devices that are overwritten by the server's average."""


class S2S(SemiDecentralized):
    """Sampled-to-sampled: only the K sampled devices receive the average; the others, and
    their optimizer state, are untouched.  Preserves the global mean exactly."""

    def receivers(self, sampled: np.ndarray, devices: np.ndarray) -> np.ndarray:
        return sampled


class S2A(SemiDecentralized):
    """Sampled-to-all: every device is overwritten by the average of the K sampled ones,
    which removes all disagreement but moves the global mean (broadcast bias)."""

    def receivers(self, sampled: np.ndarray, devices: np.ndarray) -> np.ndarray:
        return devices
