"""The simulated clock of plans that do not keep their own time: a dataflow over the steps.

Each row has a time at which it is ready.  Training delays its nodes by their compute time;
a message leaves its sender when the sender is ready and arrives a transfer time later; a
row that receives is ready once its last message has arrived.  A strategy with a barrier
(synchronous D-PSGD) starts every round at the time the slowest row finished the last one.
Server rows (after the nodes) compute instantly, have unlimited bandwidth, and reach a node
with the median latency from that node's site, like a well-placed data-centre server.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from fedsim.plans import RoundPlan, Step
from fedsim.simulated.network import Network
from fedsim.training.schedule import NodeData, samples_in_steps

if TYPE_CHECKING:
    from fedsim.federation import Federation


class Clock:
    """Per-row ready times, advanced plan by plan; ``now`` is the latest of them.

    A plan costs time in the rows it moves, not in the population: a barrier (or a
    protocol's own finishing time) raises a ``floor`` that every row's time is at least,
    and ``now`` grows with the times written (8 bytes per row).
    """

    def __init__(
        self, network: Network, num_rows: int, node_data: NodeData | Federation, batch_size: int
    ) -> None:
        """``node_data`` (or the federation) gives each node's number of examples."""
        self.network = network
        self.num_nodes = network.num_nodes
        self._ready = np.zeros(num_rows, dtype=np.float64)
        self.floor = self.now = 0.0
        self.num_examples = node_data.num_examples
        self.batch_size = batch_size
        self.site_latency = np.median(network.site_latency, axis=1)  # to a server, per site

    @property
    def ready(self) -> np.ndarray:
        """Every row's ready time (a copy: O(rows))."""
        return np.maximum(self._ready, self.floor)

    def _raise_floor(self, time: float) -> None:
        """Every row is ready at ``time`` at the earliest."""
        self.floor = self.now = max(self.now, time)

    def advance(
        self,
        plan: RoundPlan,
        message_bytes: int,
        barrier: bool,
        link_bytes: Mapping[str, int] | None = None,
    ) -> float:
        """Time the plan's steps, each model message ``message_bytes`` long (or
        ``link_bytes[link]`` where it travels encoded); returns the simulated time at which
        the round completed."""
        if plan.finished_at is not None:
            self._raise_floor(plan.finished_at)
            return self.now
        for step in plan.steps:
            self._step(step, message_bytes, link_bytes or {})
        if barrier:
            self._raise_floor(self.now)
        return self.now

    def _times(self, rows: np.ndarray) -> np.ndarray:
        """The ready times of ``rows``."""
        return np.maximum(self._ready[rows], self.floor)

    def _step(self, step: Step, message_bytes: int, link_bytes: Mapping[str, int]) -> None:
        training = step.training()
        if training is not None:
            nodes = np.asarray(training.nodes, dtype=np.int64)
            done = self._times(nodes) + self.training_times(nodes, training.epochs, training.steps)
            self._ready[nodes] = done
            self.now = max(self.now, float(done.max(initial=0.0)))
            return
        messages = step.messages(self.num_nodes)
        senders, receivers = messages.senders, messages.receivers
        size = link_bytes.get(messages.link, message_bytes) + messages.side_bytes
        arrival = self._times(senders) + self._transfer_times(senders, receivers, size)
        self._ready[receivers] = self._times(receivers)
        np.maximum.at(self._ready, receivers, arrival)
        self.now = max(self.now, float(arrival.max(initial=0.0)))

    def training_times(
        self, nodes: np.ndarray, epochs: int | np.ndarray | None, steps: int | np.ndarray | None
    ) -> np.ndarray:
        """Seconds each of ``nodes`` computes for ``epochs`` epochs or ``steps`` steps."""
        examples = self.num_examples[nodes].astype(np.float64)
        steps_per_epoch = np.ceil(examples / self.batch_size)
        if epochs is not None:
            samples, steps = epochs * examples, epochs * steps_per_epoch
        else:
            samples = samples_in_steps(examples, steps, self.batch_size)
            steps = np.where(examples > 0, steps, 0)
        return self.network.compute_time(nodes, samples, steps)

    def task_times(
        self,
        clients: np.ndarray,
        epochs: int | np.ndarray | None,
        steps: int | np.ndarray | None,
        download_bytes: int,
        upload_bytes: int,
    ) -> np.ndarray:
        """Seconds from a server's sending its model to its receiving each client's update,
        as this clock times them (each client alone on its links): the download, the local
        training, the upload."""
        server = np.full(len(clients), self.num_nodes)
        return (
            self._transfer_times(server, clients, download_bytes)
            + self.training_times(clients, epochs, steps)
            + self._transfer_times(clients, server, upload_bytes)
        )

    def _transfer_times(
        self, senders: np.ndarray, receivers: np.ndarray, num_bytes: int
    ) -> np.ndarray:
        """Node-to-node transfers share bandwidth as the network says; a transfer to or from
        a server is limited by the node's end alone."""
        times = np.zeros(len(senders), dtype=np.float64)
        between_nodes = (senders < self.num_nodes) & (receivers < self.num_nodes)
        times[between_nodes] = self.network.transfer_times(
            senders[between_nodes], receivers[between_nodes], num_bytes
        )
        for node_end, other_end, bandwidth in (
            (senders, receivers, self.network.upload),
            (receivers, senders, self.network.download),
        ):
            with_server = (node_end < self.num_nodes) & (other_end >= self.num_nodes)
            nodes = node_end[with_server]
            _, where, count = np.unique(nodes, return_inverse=True, return_counts=True)
            share = count[where]
            site_latency = self.site_latency[self.network.node_site[nodes]]
            latency = site_latency + self.network.access_latency[nodes]
            times[with_server] = latency + num_bytes * share / bandwidth[nodes]
        return times

    def state(self) -> dict[str, Any]:
        return {"ready": self.ready}

    def restore(self, state: dict[str, Any]) -> None:
        self._ready = state["ready"].copy()
        self.floor, self.now = 0.0, float(self._ready.max(initial=0.0))
