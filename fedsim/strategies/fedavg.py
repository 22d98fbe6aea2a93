"""Federated averaging with a server and uniform client sampling."""

from __future__ import annotations

import numpy as np

from fedsim import rng
from fedsim.errors import check
from fedsim.plans import Average, RoundPlan, Train
from fedsim.server_optimizers import ServerOptimizer
from fedsim.strategies.base import Federation, SampleSize, Strategy, local_work


class FedAvg(Strategy):
    """FedAvg (McMahan et al., "Communication-Efficient Learning of Deep Networks from
    Decentralized Data", AISTATS 2017).

    Each round the server samples ``sample_size`` nodes (or a ``fraction`` of them) uniformly
    without replacement; they start from the global model, run local SGD with a fresh
    optimizer (or, with ``fresh_optimizer=false``, each client's own optimizer state from its
    last round, as a client that keeps its optimizer does), and the server replaces the
    global model by their average weighted by number of examples
    (``weighting="num_examples"``) or uniformly (``weighting="uniform"``).
    Clients talk to the server only, so the configured topology is not used.

    Variants override :meth:`local_training` (FedProx, FedNova), :meth:`aggregation`
    (FedNova) or set ``server_optimizer`` (FedAvgM, FedAdam, ...).
    """

    num_servers = 1
    server_holds_global_model = True
    server_optimizer: ServerOptimizer | None = None  # None: the average becomes the model

    def __init__(
        self,
        sample_size: int | None = 10,
        fraction: float | None = None,
        local_epochs: int | None = 1,
        local_steps: int | None = None,
        weighting: str = "num_examples",
        fresh_optimizer: bool = True,
    ) -> None:
        self.sampling = SampleSize(sample_size, fraction, ("sample_size", "fraction"))
        check(
            weighting in ("num_examples", "uniform"),
            f"strategy.weighting={weighting!r} is not one of: num_examples, uniform",
        )
        self.weighting = weighting
        self.fresh_optimizer = fresh_optimizer
        self.local_epochs, self.local_steps = local_work(local_epochs, local_steps)

    def validate(self, federation: Federation) -> None:
        self.sampling.check_fits(federation.num_nodes)

    def plan(self, round_idx: int, federation: Federation) -> RoundPlan:
        server = np.array([federation.num_nodes])
        sampled = self.sample(round_idx, federation)
        return RoundPlan(
            steps=(
                Average(sources=server, targets=sampled, weights=np.ones(1)),
                self.local_training(sampled, round_idx, federation),
                self.aggregation(sampled, round_idx, federation),
            )
        )

    def sample(self, round_idx: int, federation: Federation) -> np.ndarray:
        """This round's clients, drawn uniformly without replacement (sorted)."""
        generator = rng.generator(federation.seed, rng.SAMPLING, round_idx)
        count = self.sampling.of(federation.num_nodes)
        return np.sort(generator.choice(federation.num_nodes, count, replace=False))

    def local_training(self, sampled: np.ndarray, round_idx: int, federation: Federation) -> Train:
        """What the sampled clients do with the global model."""
        return Train(
            sampled,
            epochs=self.local_epochs,
            steps=self.local_steps,
            fresh_optimizer=self.fresh_optimizer,
        )

    def aggregation(self, sampled: np.ndarray, round_idx: int, federation: Federation) -> Average:
        """The server's average of the clients' models, applied by its server optimizer."""
        server = np.array([federation.num_nodes])
        weights = self.client_weights(sampled, federation)
        return Average(sampled, server, weights, update=self.server_optimizer)

    def client_weights(self, sampled: np.ndarray, federation: Federation) -> np.ndarray:
        """Each sampled client's weight in the average (they sum to one)."""
        if self.weighting == "num_examples" and federation.num_examples[sampled].sum() > 0:
            return federation.num_examples[sampled] / federation.num_examples[sampled].sum()
        return np.full(len(sampled), 1.0 / len(sampled))
