"""MoDeST: decentralized sampling, simulated message by message on the simulated clock."""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fedsim import rng
from fedsim.errors import check
from fedsim.plans import Aggregate, Average, RoundPlan, Traffic, Train
from fedsim.simulated.churn import CRASH, JOIN, LEAVE
from fedsim.strategies.base import Federation, Strategy
from fedsim.strategies.modest.sampling import ranking, select
from fedsim.strategies.modest.views import Views

TRAINED, ARRIVED, TIMED_OUT, DELIVERED = range(4)
MAX_NODES = 10_000  # every node keeps a view of every node: n^2 entries
CONTROL = ("view", "ping", "membership")


@dataclass
class _Round:
    """What happens in one round: the models aggregators received, and who adopted what."""

    incoming: dict[int, list[int]] = field(default_factory=dict)
    completed: dict[int, float] = field(default_factory=dict)
    adopted: dict[int, tuple[float, int]] = field(default_factory=dict)
    trained: list[int] = field(default_factory=list)
    events: list[tuple[float, int, int, tuple]] = field(default_factory=list)
    last_time: float = 0.0
    pushed: int = 0

    def push(self, time: float, kind: int, *data: Any) -> None:
        """Schedule an event; equal times keep the order they were scheduled in."""
        self.pushed += 1
        heapq.heappush(self.events, (time, self.pushed, kind, data))


class MoDeST(Strategy):
    """MoDeST (de Vos, Dhasade, Kermarrec, Lavoie, Pouwelse, Sharma, "MoDeST: Bridging the Gap
    between Federated and Decentralized Learning with Decentralized Sampling", arXiv
    2302.13837v1), as its authors' code at commit 96f5273 runs it.

    Round k: the nodes that received the aggregated model of index k train one local epoch
    with a fresh optimizer, ping down the hash ranking of round k+1 in their own views for
    the first ``num_aggregators`` responsive nodes and send them their models.  An
    aggregator averages uniformly once ``ceil(sample_size * success_fraction)`` models
    arrived, pings down the same ranking for ``sample_size`` responsive nodes and sends them
    the average; each adopts the first average it receives.  Views travel with every model
    and merge by maximum.  ``aggregation_timeout_s`` (not in v1, which stalls instead) lets
    an aggregator proceed with fewer models that long after the first arrived.
    """

    handles_churn = True

    def __init__(
        self,
        sample_size: int = 10,
        num_aggregators: int = 1,
        success_fraction: float = 1.0,
        local_epochs: int = 1,
        ping_timeout_s: float = 5.0,
        ping_resend_s: float = 1.0,
        inactivity_threshold: int = 1000,
        aggregation_timeout_s: float | None = None,
        ping_bytes: int = 100,
        view_entry_bytes: int = 87,
        announcement_bytes: int = 100,
    ) -> None:
        for name, value in (
            ("sample_size", sample_size),
            ("num_aggregators", num_aggregators),
            ("local_epochs", local_epochs),
        ):
            check(value >= 1, f"strategy.{name}={value} must be an integer >= 1")
        check(
            0 < success_fraction <= 1,
            f"strategy.success_fraction={success_fraction} must lie in (0, 1]",
        )
        for name, value in (("ping_timeout_s", ping_timeout_s), ("ping_resend_s", ping_resend_s)):
            check(value > 0, f"strategy.{name}={value} must be > 0")
        check(
            aggregation_timeout_s is None or aggregation_timeout_s > 0,
            f"strategy.aggregation_timeout_s={aggregation_timeout_s} must be > 0 or null",
        )
        check(
            inactivity_threshold >= 0,
            f"strategy.inactivity_threshold={inactivity_threshold} must be >= 0",
        )
        for name, value in (
            ("ping_bytes", ping_bytes),
            ("view_entry_bytes", view_entry_bytes),
            ("announcement_bytes", announcement_bytes),
        ):
            check(value >= 0, f"strategy.{name}={value} must be >= 0")
        self.sample_size, self.num_aggregators = sample_size, num_aggregators
        self.success_fraction, self.local_epochs = success_fraction, local_epochs
        self.threshold = math.ceil(round(sample_size * success_fraction, 9))
        self.ping_timeout_s, self.ping_resend_s = ping_timeout_s, ping_resend_s
        self.inactivity_threshold = inactivity_threshold
        self.aggregation_timeout_s = aggregation_timeout_s
        self.ping_bytes, self.view_entry_bytes = ping_bytes, view_entry_bytes
        self.announcement_bytes = announcement_bytes
        self._protocol: dict[str, Any] | None = None

    def validate(self, federation: Federation) -> None:
        num_nodes = federation.num_nodes
        for name, value in (
            ("sample_size", self.sample_size),
            ("num_aggregators", self.num_aggregators),
        ):
            check(value <= num_nodes, f"strategy.{name}={value} must be <= num_nodes={num_nodes}")
        check(
            num_nodes <= MAX_NODES,
            f"strategy=modest keeps every node's view of every node (num_nodes^2 entries); "
            f"num_nodes={num_nodes} must be <= {MAX_NODES}",
        )
        initial = int(federation.churn.initial.sum())
        check(
            initial >= 1,
            "strategy=modest needs at least one node present at the start (see churn settings)",
        )

    # --- state -------------------------------------------------------------------------

    def _start(self, federation: Federation) -> None:
        initial = federation.churn.initial
        present = np.flatnonzero(initial)
        first = ranking(1, present, federation.num_nodes, federation.seed)[: self.sample_size]
        self._protocol = {
            "views": Views(federation.num_nodes, initial),
            "own_index": initial.astype(np.int64),
            "trainers": {int(node): 0.0 for node in first},
            "churn_time": 0.0,
            "global_row": None,
            "stalled": None,
        }

    def state(self) -> dict[str, Any]:
        if self._protocol is None:
            return {}
        state = dict(self._protocol)
        state["views"] = self._protocol["views"].state()
        state["own_index"] = self._protocol["own_index"].copy()
        state["trainers"] = dict(self._protocol["trainers"])
        return state

    def restore(self, state: dict[str, Any]) -> None:
        if not state:
            return
        views = Views(len(state["own_index"]), np.zeros(len(state["own_index"]), dtype=bool))
        views.restore(state["views"])
        self._protocol = {**state, "views": views}

    def global_model_row(self, num_nodes: int) -> int | None:
        return None if self._protocol is None else self._protocol["global_row"]

    # --- one round ---------------------------------------------------------------------

    def plan(self, round_idx: int, federation: Federation) -> RoundPlan:
        if self._protocol is None:
            self._start(federation)
        protocol = self._protocol
        if protocol["stalled"] is not None:
            return RoundPlan(steps=(), stalled=protocol["stalled"])
        self.federation = federation
        self.views: Views = protocol["views"]
        self.sample_index = round_idx + 1
        self.traffic = Traffic(
            model_messages=np.zeros(federation.num_nodes, dtype=np.int64),
            control_bytes={kind: np.zeros(federation.num_nodes) for kind in CONTROL},
            aggregations=np.zeros(federation.num_nodes, dtype=np.int64),
        )
        trainers = protocol["trainers"]
        self._churn_until(min(trainers.values()))
        current = _Round()
        self.num_trainers = len(trainers)
        for node, received in sorted(trainers.items()):
            if federation.churn.is_alive(node, received):
                current.push(received + self._compute_time(node), TRAINED, node)
        while current.events:
            time, _, kind, data = heapq.heappop(current.events)
            current.last_time = max(current.last_time, time)
            self._handle(current, time, kind, *data)
        return self._finish(current)

    def _handle(self, current: _Round, time: float, kind: int, *data: Any) -> None:
        if kind == TRAINED:
            self._trained(current, time, *data)
        elif kind == ARRIVED:
            self._arrived(current, time, *data)
        elif kind == TIMED_OUT:
            aggregator = data[0]
            if aggregator not in current.completed and current.incoming.get(aggregator):
                self._aggregate(current, time, aggregator)
        else:
            self._delivered(current, time, *data)

    def _trained(self, current: _Round, time: float, node: int) -> None:
        """A trainer finished: unless a newer model interrupted it, it pings for the aggregators
        and sends them its model.  A crash before the send cancels it, as in v1
        (``send_trained_model_to_aggregators`` returns when inactive, community.py 318-321)."""
        adopted = current.adopted.get(node)
        if adopted is not None and adopted[0] <= time:
            return  # a newer aggregated model cancelled this training
        if not self.federation.churn.is_alive(node, time):
            return
        current.trained.append(node)
        aggregators, sent_at = self._aggregators(node, time)
        if self.federation.churn.is_alive(node, sent_at):
            self._send(current, node, aggregators, sent_at, ARRIVED, self.num_trainers)

    def _aggregators(self, node: int, time: float) -> tuple[list[int], float]:
        """The aggregators of the next index: the first responsive of its ranking."""
        return self._select(node, self.sample_index + 1, self.num_aggregators, time)

    def _arrived(self, current: _Round, time: float, aggregator: int, sender: int, view) -> None:
        if not self._receive(aggregator, sender, time, view):
            return
        self.views.aggregate_round[aggregator] = max(
            self.views.aggregate_round[aggregator], self.sample_index + 1
        )
        if aggregator in current.completed:
            return  # late: the average is already out
        incoming = current.incoming.setdefault(aggregator, [])
        if sender in incoming:
            return
        incoming.append(sender)
        if len(incoming) >= self.threshold:
            self._aggregate(current, time, aggregator)
        elif len(incoming) == 1 and self.aggregation_timeout_s is not None:
            current.push(time + self.aggregation_timeout_s, TIMED_OUT, aggregator)

    def _aggregate(self, current: _Round, time: float, aggregator: int) -> None:
        """Average the received models uniformly and send the average to the next sample."""
        current.completed[aggregator] = time
        self.traffic.aggregations[aggregator] += 1
        trainers, sent_at = self._select(aggregator, self.sample_index + 1, self.sample_size, time)
        if self.federation.churn.is_alive(aggregator, sent_at):
            self._send(current, aggregator, trainers, sent_at, DELIVERED, self.num_aggregators)

    def _delivered(self, current: _Round, time: float, node: int, aggregator: int, view) -> None:
        if not self._receive(node, aggregator, time, view):
            return
        if node not in current.adopted:  # the first average for this index wins
            current.adopted[node] = (time, aggregator)
            self.views.train_round[node] = max(self.views.train_round[node], self.sample_index + 1)

    # --- messages ----------------------------------------------------------------------

    def _send(
        self, current: _Round, sender: int, receivers: list[int], at: float, kind: int, fan_in: int
    ) -> None:
        """``sender`` sends its model and view to ``receivers`` at once (to itself: a call)."""
        view = self.views.snapshot(sender)
        view_bytes = self.views.entries(sender) * self.view_entry_bytes
        others = [node for node in receivers if node != sender]
        network = self.federation.network
        size = self.federation.bytes_on("d2d") + view_bytes
        for node in receivers:
            if node == sender:
                current.push(at, kind, node, sender, view)
                continue
            rate = min(network.upload[sender] / len(others), network.download[node] / fan_in)
            latency = float(network.latency([sender], [node])[0])
            current.push(at + latency + size / rate, kind, node, sender, view)
            self.views.saw(sender, node, self.views.round_estimate(sender))
        self.traffic.model_messages[sender] += len(others)
        self.traffic.control_bytes["view"][sender] += view_bytes * len(others)
        self.views.apply_pending(sender)

    def _receive(self, node: int, sender: int, time: float, view) -> bool:
        """A model message reaches ``node``: merge the view, note the sender alive."""
        if not self.federation.churn.is_alive(node, time):
            return False
        self.views.merge(node, view)
        estimate = max(self.sample_index, self.views.round_estimate(node))
        self.views.saw(node, sender, estimate)
        return True

    def _select(
        self, node: int, round_idx: int, count: int, time: float
    ) -> tuple[list[int], float]:
        """Ping down ``node``'s ranking of ``round_idx``; pings and pongs update both views."""
        candidates = self.views.candidates(node, round_idx, self.inactivity_threshold)
        ranked = ranking(round_idx, candidates, self.federation.num_nodes, self.federation.seed)
        network, churn = self.federation.network, self.federation.churn

        def answers(target: int, at: float) -> float | None:
            arrives = at + float(network.latency([node], [target])[0])
            if not churn.is_alive(target, arrives):
                return None
            return at + float(network.round_trip([node], [target], self.ping_bytes)[0])

        selection = select(
            node, ranked, count, time, answers, self.ping_timeout_s, self.ping_resend_s
        )
        pings = self.traffic.control_bytes["ping"]
        pings[node] += sum(selection.pings.values()) * self.ping_bytes
        for target in selection.answered:
            if target == node:
                continue
            pings[target] += self.ping_bytes  # the pong
            self._ping_pong(node, target)
        return selection.chosen, selection.finished_at

    def _ping_pong(self, node: int, target: int) -> None:
        """``target`` answers ``node``'s ping: v1's ``on_ping`` and ``on_pong`` (community.py
        199-246 at 96f5273).  The ping carries the pinger's round estimate; the pingee notes the
        pinger at max(its own estimate, that); the pong carries the pingee's estimate after this
        update, and the pinger notes the pingee at max(its own estimate, that)."""
        ping = self.views.round_estimate(node)
        self.views.saw(target, node, max(self.views.round_estimate(target), ping))
        pong = self.views.round_estimate(target)
        self.views.saw(node, target, max(self.views.round_estimate(node), pong))

    # --- churn -------------------------------------------------------------------------

    def _churn_until(self, time: float) -> None:
        """Nodes that joined or left since the last round announce it to peers they know."""
        protocol, churn = self._protocol, self.federation.churn
        for event_time, node, kind in churn.events_between(protocol["churn_time"], time):
            if kind == CRASH:
                continue  # a crash says nothing; peers notice by ping timeouts
            if kind == JOIN:
                self.views.bootstrap(node, churn.initial, int(protocol["own_index"][node]))
            self._announce(node, event_time, leave=kind == LEAVE)
        protocol["churn_time"] = max(protocol["churn_time"], time)

    def _announce(self, node: int, time: float, leave: bool) -> None:
        protocol = self._protocol
        known = self.views.known(node)
        index = int(protocol["own_index"][node])
        generator = rng.generator(self.federation.seed, rng.PROTOCOL, node, index)
        peers = generator.choice(known, min(self.sample_size, len(known)), replace=False)
        estimate = self.views.round_estimate(node)
        for peer in peers:
            if self.federation.churn.is_alive(int(peer), time):
                self.views.announce(int(peer), node, estimate, index, leave)
        self.traffic.control_bytes["membership"][node] += len(peers) * self.announcement_bytes
        protocol["own_index"][node] = index + 1

    # --- the plan ----------------------------------------------------------------------

    def _compute_time(self, node: int) -> float:
        examples = self.federation.num_examples[node] * self.local_epochs
        steps = math.ceil(self.federation.num_examples[node] / self.federation.batch_size)
        network = self.federation.network
        return float(network.compute_time([node], [examples], [steps * self.local_epochs])[0])

    def _finish(self, current: _Round) -> RoundPlan:
        """The round's plan: the trainers' training, then each aggregator's uniform average
        written to the nodes that adopted it."""
        protocol = self._protocol
        groups = []
        for aggregator in sorted(current.completed, key=current.completed.get):
            targets = [node for node, (_, by) in current.adopted.items() if by == aggregator]
            if targets:
                sources = np.array(sorted(current.incoming[aggregator]))
                weights = np.full(len(sources), 1.0 / len(sources))
                groups.append(Average(sources, np.array(sorted(targets)), weights))
        steps: tuple = (
            Train(
                np.array(sorted(current.trained), dtype=np.int64),
                epochs=self.local_epochs,
                fresh_optimizer=True,
            ),
        )
        if groups:
            steps += (Aggregate(tuple(groups)),)
            protocol["global_row"] = int(groups[0].targets[0])
            protocol["trainers"] = {node: time for node, (time, _) in current.adopted.items()}
            finished_at = min(current.completed.values())
        else:
            protocol["stalled"] = (
                f"MoDeST stalled at round {self.sample_index}: no aggregator received "
                f"{self.threshold} trained models (strategy.sample_size={self.sample_size}, "
                f"strategy.success_fraction={self.success_fraction}); lower success_fraction "
                "or set strategy.aggregation_timeout_s"
            )
            finished_at = current.last_time
        return RoundPlan(
            steps=steps,
            traffic=self.traffic,
            finished_at=finished_at,
            stalled=protocol["stalled"],
        )
