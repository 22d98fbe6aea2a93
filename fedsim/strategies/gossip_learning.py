"""Gossip learning with age-weighted merges, the baseline of the MoDeST paper."""

from __future__ import annotations

from typing import Any

import numpy as np

from fedsim import rng
from fedsim.errors import check
from fedsim.plans import Aggregate, Average, RoundPlan, Traffic, Train
from fedsim.server_optimizers import Mixing
from fedsim.strategies.base import Federation, Strategy

AGE_BYTES = 8  # the age travels with the model
SENT = "sent"  # the per-row slot holding the model a node sent this period


class GossipLearning(Strategy):
    """Gossip learning (Ormándi, Hegedűs, Jelasity, "Gossip learning with linear models on
    fully distributed data", Concurrency and Computation 2013) as the MoDeST paper's
    official code runs it.

    At the start of every ``period_s`` simulated seconds (one round) every node that is up
    pushes its model and its age, as they are then, to one peer drawn uniformly from all
    other nodes.  A receiver merges ``θ ← (a θ + a' θ') / (a + a')`` with its age ``a`` and
    the sender's ``a'`` (equal weights when both are 0), keeps ``max(a, a')`` as its age,
    trains ``local_epochs`` epochs and adds the samples it trained on to its age.  A node
    that receives several models in a period merges and trains once per model, in order of
    arrival; what it merges is always the model its sender sent, never the sender's later
    state (the sent models are kept in the per-row slot ``"sent"``).  Messages to nodes
    that are down are lost.
    """

    handles_churn = True
    round_unit = "period"  # period_s simulated seconds, in which every node pushes once

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
        steps: list = [self._send(np.unique(senders))] if len(senders) else []
        sent_ages = self.ages.copy()  # what each push carries: the age at the period's start
        merges = np.zeros(num_nodes, dtype=np.int64)
        for index in range(int(wave.max()) + 1 if len(wave) else 0):
            in_wave = wave == index
            receivers, sources = peers[in_wave], senders[in_wave]
            steps += [
                self._merge(receivers, sources, sent_ages),
                Train(receivers, epochs=self.local_epochs, fresh_optimizer=True),
            ]
            self.ages[receivers] = np.maximum(self.ages[receivers], sent_ages[sources])
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

    @staticmethod
    def _send(senders: np.ndarray) -> Aggregate:
        """Each sender's model as it is at the start of the period, kept in its ``"sent"`` row
        (what its message carries; the message transforms rewrite it here)."""
        return Aggregate(
            tuple(Average(np.array([s]), np.array([s]), np.ones(1), into=SENT) for s in senders)
        )

    def _merge(
        self, receivers: np.ndarray, sources: np.ndarray, sent_ages: np.ndarray
    ) -> Aggregate:
        """Each receiver's age-weighted mix with the model its sender sent."""
        own, other = self.ages[receivers], sent_ages[sources]
        total = own + other
        weight_other = np.divide(other, total, out=np.full(len(total), 0.5), where=total > 0)
        return Aggregate(
            tuple(
                Average(np.array([s]), np.array([r]), np.ones(1), Mixing(float(w)), SENT, "params")
                for r, s, w in zip(receivers, sources, weight_other, strict=True)
            )
        )

    def state(self) -> dict[str, Any]:
        return {} if self.ages is None else {"ages": self.ages.copy()}

    def restore(self, state: dict[str, Any]) -> None:
        if state:
            self.ages = state["ages"].copy()
