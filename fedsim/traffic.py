"""What the simulated nodes sent over a run: bytes and aggregations, counted from the plans."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from fedsim.plans import RoundPlan

CHANNELS = ("d2d", "uplink", "downlink")


class TrafficCounters:
    """Model bytes, control bytes by kind and aggregations per row (nodes, then servers),
    and model bytes per channel, added up round after round.

    A protocol that counts its own traffic (``RoundPlan.traffic``: MoDeST, gossip learning)
    is taken at its word, all of it device to device; other plans are counted from their
    steps' messages.  A model message is ``message_bytes`` long, or ``link_bytes[link]`` on
    a link where it travels encoded; what messages carry besides (``side_bytes``) is
    control traffic of kind ``side``.  A plan counted from its messages costs time in the
    rows that send or combine, not in the population (totals and maxima kept as they
    grow); 16 bytes per row, and 8 per kind of control traffic.
    """

    def __init__(
        self,
        num_nodes: int,
        num_rows: int,
        message_bytes: int,
        link_bytes: Mapping[str, int] | None = None,
    ) -> None:
        self.num_nodes, self.num_rows, self.message_bytes = num_nodes, num_rows, message_bytes
        self.link_bytes = dict(link_bytes or {})
        self.bytes_sent = np.zeros(num_rows, dtype=np.float64)  # float: no silent overflow
        self.bytes_control: dict[str, np.ndarray] = {}
        self.aggregations = np.zeros(num_rows, dtype=np.int64)
        self.bytes_by_channel: dict[str, float] = dict.fromkeys(CHANNELS, 0.0)
        self._totals()

    def account(self, plan: RoundPlan) -> None:
        """Count one round's plan."""
        traffic = plan.traffic
        if traffic is not None:
            sent = self._rows(traffic.model_messages) * float(self.bytes_on("d2d"))
            self.bytes_sent += sent
            self.bytes_by_channel["d2d"] += float(sent.sum())
            self.aggregations += self._rows(traffic.aggregations)
            for kind, control in traffic.control_bytes.items():
                total = self.bytes_control.setdefault(kind, np.zeros(self.num_rows))
                total += self._rows(control)
            self._totals()
            return
        for step in plan.steps:
            messages = step.messages(self.num_nodes)
            senders, count = np.unique(messages.senders, return_counts=True)
            sent = count * float(self.bytes_on(messages.link))
            self.bytes_sent[senders] += sent
            self.model_total += float(sent.sum())
            combiners, combined = np.unique(messages.combiners, return_counts=True)
            self.aggregations[combiners] += combined
            if messages.link is not None:
                self.bytes_by_channel[messages.link] += float(sent.sum())
            if messages.side_bytes:
                side = self.bytes_control.setdefault("side", np.zeros(self.num_rows))
                side[senders] += count * float(messages.side_bytes)
                self.control_totals["side"] = self.control_totals.get("side", 0.0) + float(
                    count.sum() * messages.side_bytes
                )
            self._grown(senders, combiners)

    def _totals(self) -> None:
        """Totals and per-node maxima, from the per-row counters (O(rows))."""
        nodes = slice(0, self.num_nodes)
        self.model_total = float(self.bytes_sent.sum())
        self.control_totals = {kind: float(sent.sum()) for kind, sent in self.bytes_control.items()}
        self.most_sent = float((self.bytes_sent + self.control())[nodes].max(initial=0.0))
        self.most_aggregations = int(self.aggregations[nodes].max(initial=0))

    def _grown(self, senders: np.ndarray, combiners: np.ndarray) -> None:
        """The maxima after the rows ``senders`` sent more and ``combiners`` combined more
        (counters only grow)."""
        senders = senders[senders < self.num_nodes]
        if len(senders):
            sent = self.bytes_sent[senders] + self._control_of(senders)
            self.most_sent = max(self.most_sent, float(sent.max()))
        combiners = combiners[combiners < self.num_nodes]
        if len(combiners):
            self.most_aggregations = max(
                self.most_aggregations, int(self.aggregations[combiners].max())
            )

    def _control_of(self, rows: np.ndarray) -> np.ndarray:
        """Control bytes of ``rows``, all kinds together."""
        return sum((sent[rows] for sent in self.bytes_control.values()), np.zeros(len(rows)))

    def bytes_on(self, link: str | None) -> int:
        """The size of one model message on ``link``."""
        return self.link_bytes.get(link, self.message_bytes)

    def control(self) -> np.ndarray:
        """Control bytes per row, all kinds together."""
        return sum(self.bytes_control.values(), np.zeros(self.num_rows))

    def metrics(self) -> dict[str, float]:
        """The totals over all rows, the busiest node's, and the totals by kind and channel."""
        control = sum(self.control_totals.values(), 0.0)
        return {
            "bytes_sent_total": self.model_total + control,
            "bytes_sent_max_node": self.most_sent,
            "bytes_model_total": self.model_total,
            "bytes_control_total": control,
            **{f"bytes_{kind}_total": sent for kind, sent in self.control_totals.items()},
            "aggregations_max_node": float(self.most_aggregations),
            **{f"bytes_{link}_total": float(sent) for link, sent in self.bytes_by_channel.items()},
        }

    def compression_ratio(self) -> dict[str, float]:
        """Where messages travel encoded: the model bytes sent over what the same messages
        would have taken dense."""
        if not self.link_bytes:
            return {}
        dense = sum(
            sent / self.bytes_on(link) * self.message_bytes
            for link, sent in self.bytes_by_channel.items()
        )
        return {"compression_ratio": self.model_total / dense} if dense else {}

    def node_metrics(self, nodes: np.ndarray) -> dict[str, np.ndarray]:
        """Per node of ``nodes``: model bytes, control bytes and aggregations so far."""
        return {
            "node_bytes_model": self.bytes_sent[nodes],
            "node_bytes_control": self._control_of(np.asarray(nodes, dtype=np.int64)),
            "node_aggregations": self.aggregations[nodes].astype(np.float64),
        }

    def node_totals(self) -> dict[str, np.ndarray]:
        """Per node over the run so far: model bytes, control bytes and aggregations."""
        num_nodes = self.num_nodes
        return {
            "node": np.arange(num_nodes),
            "bytes_model": self.bytes_sent[:num_nodes].copy(),
            "bytes_control": self.control()[:num_nodes],
            "aggregations": self.aggregations[:num_nodes].copy(),
        }

    def state(self) -> dict[str, Any]:
        """The counters as plain data (copies)."""
        return {
            "bytes_sent": self.bytes_sent.copy(),
            "bytes_control": {kind: sent.copy() for kind, sent in self.bytes_control.items()},
            "aggregations": self.aggregations.copy(),
            "bytes_by_channel": dict(self.bytes_by_channel),
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from a :meth:`state`."""
        self.bytes_sent = state["bytes_sent"].copy()
        self.bytes_control = {kind: sent.copy() for kind, sent in state["bytes_control"].items()}
        self.aggregations = state["aggregations"].copy()
        self.bytes_by_channel = dict(state["bytes_by_channel"])
        self._totals()

    def _rows(self, per_node: np.ndarray) -> np.ndarray:
        """A per-node array padded with zeros for the server rows."""
        padded = np.zeros(self.num_rows, dtype=np.asarray(per_node).dtype)
        padded[: len(per_node)] = per_node
        return padded
