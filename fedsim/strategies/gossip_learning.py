"""Gossip learning with age-weighted merges, the baseline of the MoDeST paper."""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from fedsim import rng
from fedsim.errors import check
from fedsim.plans import Gossip, RoundPlan, Traffic, Train
from fedsim.strategies.base import Federation, Strategy

AGE_BYTES = 8  # the age travels with the model


class GossipLearning(Strategy):
    """Gossip learning (Ormándi, Hegedűs, Jelasity, "Gossip learning with linear models on
    fully distributed data", Concurrency and Computation 2013) as the MoDeST paper's
    official code runs it.

    Every ``period_s`` simulated seconds (one round) every node that is up pushes its model
    and its age to one peer drawn uniformly from all other nodes.  A receiver merges
    ``θ ← (a θ + a' θ') / (a + a')`` with its age ``a`` and the sender's ``a'`` (equal weights
    when both are 0), keeps ``max(a, a')`` as its age, trains ``local_epochs`` epochs and
    adds the samples it trained on to its age.  A node that receives several models in a
    period merges and trains once per model, in order of arrival; a sender that received
    earlier in the period sends its model as it is when its push is merged.  Messages to
    nodes that are down are lost.
    """

    handles_churn = True

    def __init__(self, period_s: float = 60.0, local_epochs: int = 1) -> None:
        check(period_s > 0, f"strategy.period_s={period_s} must be > 0")
        check(local_epochs >= 1, f"strategy.local_epochs={local_epochs} must be an integer >= 1")
        self.period_s, self.local_epochs = period_s, local_epochs
        self.ages: np.ndarray | None = None

    def validate(self, federation: Federation) -> None:
        check(
            federation.num_nodes >= 2,
            f"strategy=gossip_learning needs num_nodes >= 2, got {federation.num_nodes}",
        )

    def plan(self, round_idx: int, federation: Federation) -> RoundPlan:
        num_nodes = federation.num_nodes
        if self.ages is None:
            self.ages = np.zeros(num_nodes, dtype=np.float64)
        start = round_idx * self.period_s
        senders = np.flatnonzero(federation.churn.alive(start))
        generator = rng.generator(federation.seed, rng.SAMPLING, round_idx)
        peers = (senders + generator.integers(1, num_nodes, size=len(senders))) % num_nodes
        arrivals = start + federation.network.transfer_times(
            senders, peers, federation.bytes_on("d2d") + AGE_BYTES
        )
        model_messages = np.bincount(senders, minlength=num_nodes)  # lost ones were sent too
        delivered = np.ones(len(peers), dtype=bool)
        if not federation.churn.static:  # a push to a node that is down by then is lost
            delivered = np.array(
                [
                    federation.churn.is_alive(int(p), t)
                    for p, t in zip(peers, arrivals, strict=True)
                ],
                dtype=bool,
            )
        senders, peers, arrivals = senders[delivered], peers[delivered], arrivals[delivered]
        order = np.lexsort((arrivals, peers))
        senders, peers = senders[order], peers[order]
        wave = np.arange(len(peers)) - np.searchsorted(peers, peers)  # arrival rank per receiver
        steps: list = []
        merges = np.zeros(num_nodes, dtype=np.int64)
        for index in range(int(wave.max()) + 1 if len(wave) else 0):
            in_wave = wave == index
            receivers, sources = peers[in_wave], senders[in_wave]
            steps += [
                Gossip(self._merge(receivers, sources, num_nodes)),
                Train(receivers, epochs=self.local_epochs, fresh_optimizer=True),
            ]
            self.ages[receivers] = np.maximum(self.ages[receivers], self.ages[sources])
            self.ages[receivers] += self.local_epochs * federation.num_examples[receivers]
            merges[receivers] += 1
        return RoundPlan(
            steps=tuple(steps),
            traffic=Traffic(
                model_messages=model_messages,
                control_bytes={"age": model_messages * float(AGE_BYTES)},
                aggregations=merges,
            ),
            finished_at=start + self.period_s,
        )

    def _merge(self, receivers: np.ndarray, sources: np.ndarray, num_nodes: int) -> sp.csr_array:
        """Identity except each receiver's row: its age-weighted mix with its sender."""
        own, other = self.ages[receivers], self.ages[sources]
        total = own + other
        weight_other = np.divide(other, total, out=np.full(len(total), 0.5), where=total > 0)
        keep = np.setdiff1d(np.arange(num_nodes), receivers)
        rows = np.concatenate([keep, receivers, receivers])
        columns = np.concatenate([keep, receivers, sources])
        values = np.concatenate([np.ones(len(keep)), 1 - weight_other, weight_other])
        return sp.csr_array((values, (rows, columns)), shape=(num_nodes, num_nodes))

    def state(self) -> dict[str, Any]:
        return {} if self.ages is None else {"ages": self.ages.copy()}

    def restore(self, state: dict[str, Any]) -> None:
        if state:
            self.ages = state["ages"].copy()
