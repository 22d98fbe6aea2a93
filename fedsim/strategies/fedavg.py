"""Federated averaging with a server and uniform client sampling."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from fedsim import rng
from fedsim.errors import ConfigError, check
from fedsim.plans import Average, RoundPlan, Train
from fedsim.server_optimizers import ServerOptimizer
from fedsim.simulated.clock import Clock
from fedsim.strategies.base import Federation, SampleSize, Strategy, local_work

if TYPE_CHECKING:
    from fedsim.aggregators.feddisco import FedDisco


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

    Stragglers, on the simulated clock: the server waits for every sampled client by
    default.  With ``over_selection`` o > 1 it samples ``floor(o K)`` clients and keeps the
    K that finish first (FedScale's over-commitment, 1.3 there), with ``deadline_s`` only
    those that finish within it; a client finishes when the server has its update (its
    download, local training and upload, as the clock times them).  The others download
    but their work is dropped, and ``updates_applied`` / ``updates_dropped`` count both.

    Variants override :meth:`local_training` (FedProx, FedNova), :meth:`aggregation`
    (FedNova) or set ``server_optimizer`` (FedAvgM, FedAdam, ...).  An aggregator that
    weighs the clients itself (``aggregator=feddisco``) becomes the ``reweighting`` of
    :meth:`client_weights`, and what it has each upload carry is counted
    (:meth:`side_bytes`).
    """

    num_servers = 1
    server_holds_global_model = True
    weighs_clients = True
    server_optimizer: ServerOptimizer | None = None  # None: the average becomes the model
    reweighting: FedDisco | None = None  # set by fedsim.build for aggregator=feddisco

    def __init__(
        self,
        sample_size: int | None = 10,
        fraction: float | None = None,
        local_epochs: int | None = 1,
        local_steps: int | None = None,
        weighting: str = "num_examples",
        fresh_optimizer: bool = True,
        over_selection: float = 1.0,
        deadline_s: float | None = None,
    ) -> None:
        self.sampling = SampleSize(sample_size, fraction, ("sample_size", "fraction"))
        check(
            1.0 <= over_selection < np.inf,
            f"strategy.over_selection={over_selection} must be a finite number >= 1",
        )
        check(
            deadline_s is None or 0 < deadline_s < np.inf,
            f"strategy.deadline_s={deadline_s} must be a finite number > 0 (or null)",
        )
        self.over_selection, self.deadline_s = over_selection, deadline_s
        self.updates = {"updates_applied": 0.0, "updates_dropped": 0.0}
        check(
            weighting in ("num_examples", "uniform"),
            f"strategy.weighting={weighting!r} is not one of: num_examples, uniform",
        )
        self.weighting = weighting
        self.fresh_optimizer = fresh_optimizer
        self.local_epochs, self.local_steps = local_work(local_epochs, local_steps)

    @property
    def drops_stragglers(self) -> bool:
        return self.over_selection > 1 or self.deadline_s is not None

    def validate(self, federation: Federation) -> None:
        self.sampling.check_fits(federation.num_nodes)
        wanted = self.sampled_count(federation.num_nodes)
        check(
            wanted <= federation.num_nodes,
            f"strategy.over_selection={self.over_selection} samples {wanted} clients, more than "
            f"num_nodes={federation.num_nodes}",
        )

    def sampled_count(self, num_nodes: int) -> int:
        """How many clients the server samples: K, or floor(over_selection K) of them."""
        count = self.sampling.of(num_nodes)
        return max(count, int(np.floor(self.over_selection * count)))

    def plan(self, round_idx: int, federation: Federation) -> RoundPlan:
        server = np.array([federation.num_nodes])
        sampled = self.sample(round_idx, federation)
        kept = self.finishers(sampled, federation) if self.drops_stragglers else sampled
        download = Average(sources=server, targets=sampled, weights=np.ones(1))
        if not len(kept):  # nobody made the deadline: the global model stays
            return RoundPlan(steps=(download,))
        return RoundPlan(
            steps=(
                download,
                self.local_training(kept, round_idx, federation),
                self.aggregation(kept, round_idx, federation),
            )
        )

    def finishers(self, sampled: np.ndarray, federation: Federation) -> np.ndarray:
        """The sampled clients whose updates the server uses: the K first to finish (equal
        times: the lower id first), within the deadline if there is one (sorted)."""
        clock = Clock(
            federation.network, federation.num_nodes + 1, federation, federation.batch_size
        )
        times = clock.task_times(
            sampled,
            self.local_epochs,
            self.local_steps,
            federation.bytes_on("downlink"),
            federation.bytes_on("uplink"),
        )
        first = np.lexsort((sampled, times))[: self.sampling.of(federation.num_nodes)]
        if self.deadline_s is not None:
            first = first[times[first] <= self.deadline_s]
        self.updates["updates_applied"] += len(first)
        self.updates["updates_dropped"] += len(sampled) - len(first)
        return np.sort(sampled[first])

    def held_nodes(self) -> np.ndarray | None:
        """None when clients keep their optimizer state; else a client holds nothing between
        rounds: it starts from the downloaded model with a fresh optimizer."""
        return np.empty(0, np.int64) if self.fresh_optimizer else None

    def counters(self) -> dict[str, float]:
        return dict(self.updates) if self.drops_stragglers else {}

    def state(self) -> dict[str, Any]:
        return dict(self.updates) if self.drops_stragglers else {}

    def restore(self, state: dict[str, Any]) -> None:
        self.updates.update(state)

    def sample(self, round_idx: int, federation: Federation) -> np.ndarray:
        """This round's clients (over-selected ones included), drawn uniformly without
        replacement (sorted)."""
        generator = rng.generator(federation.seed, rng.SAMPLING, round_idx)
        count = self.sampled_count(federation.num_nodes)
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
        update, side_bytes = self.server_optimizer, self.side_bytes()
        return Average(sampled, server, weights, update=update, side_bytes=side_bytes)

    def client_weights(self, sampled: np.ndarray, federation: Federation) -> np.ndarray:
        """Each sampled client's weight in the average (they sum to one): by examples or
        uniform, or as the ``reweighting`` sets them from those."""
        sizes = federation.num_examples[sampled]
        if self.weighting != "num_examples" or sizes.sum() == 0:
            sizes = np.ones(len(sampled))
        if self.reweighting is None:
            return sizes / sizes.sum()
        if federation.label_histograms is None:
            raise ConfigError("aggregator=feddisco needs the clients' label histograms")
        return self.reweighting.client_weights(sizes, federation.label_histograms[sampled])

    def side_bytes(self) -> int:
        """What each upload carries besides the model (the ``reweighting``'s d_k)."""
        return 0 if self.reweighting is None else self.reweighting.side_bytes
