"""Asynchronous FL on the simulated clock: clients train from the server version they
downloaded, and the server updates its model as their updates arrive.

The event loop of FedScale's asynchronous mode (Lai et al., FedScale, ICML 2022; its
``async_aggregator``): ``concurrency`` clients train at once, each task taking its download,
local training and upload as the clock times them; when one ends, its slot goes to a client
sampled uniformly from those that are up, not training and not waiting in the server's
buffer.  One round is one server update, after ``buffer_size`` accepted arrivals.  Ties are
broken deterministically: at one instant every arrival (by client id) comes before any new
start.  A client that crashes or leaves during its task loses its update but holds its slot
until the task's end (async-fl.md, pitfall 6); an update more than ``max_staleness`` server
versions old is received and discarded.
"""

from __future__ import annotations

import heapq
from abc import abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import numpy as np

from fedsim import rng
from fedsim.errors import check
from fedsim.plans import Average, RoundPlan, Step, Train
from fedsim.simulated.churn import JOIN
from fedsim.simulated.clock import Clock
from fedsim.strategies.base import Federation, Strategy, local_work

STALENESS = ("constant", "polynomial", "hinge")
BASE = "base"  # the per-row slot holding the model a client downloaded
# staleness histogram bins: 0, 1, 2, 3, 4-7, 8-15, 16 and more
BIN_EDGES = np.array([0, 1, 2, 3, 4, 8, 16])
BIN_NAMES = tuple(
    f"staleness_{low}" if high == low + 1 else f"staleness_{low}_{high - 1}"
    for low, high in zip(BIN_EDGES[:-1], BIN_EDGES[1:], strict=True)
) + ("staleness_16_up",)


@dataclass(frozen=True)
class Staleness:
    """The weight ``S(s)`` of an update ``s`` server versions old (Xie, Koyejo and Gupta,
    "Asynchronous Federated Optimization", 2019): ``constant`` 1, ``polynomial``
    ``(s + 1)^-a``, ``hinge`` 1 for ``s <= b`` and ``1 / (a (s - b) + 1)`` beyond."""

    kind: str = "polynomial"
    a: float = 0.5
    b: float = 4.0

    def __post_init__(self) -> None:
        check(
            self.kind in STALENESS,
            f"strategy.staleness={self.kind!r} is not one of: {', '.join(STALENESS)}",
        )
        check(self.a > 0, f"strategy.staleness_a={self.a} must be > 0")
        check(self.b >= 0, f"strategy.staleness_b={self.b} must be >= 0")

    def __call__(self, staleness: np.ndarray) -> np.ndarray:
        s = np.asarray(staleness, dtype=np.float64)
        if self.kind == "polynomial":
            return (s + 1) ** -self.a
        if self.kind == "hinge":
            return np.where(s <= self.b, 1.0, 1.0 / (self.a * (s - self.b) + 1))
        return np.ones_like(s)


class Task(NamedTuple):
    """A client's task: it ends at ``end`` (ties: the lower ``client`` first), having
    started at ``start`` from server ``version``; ``lost`` when it goes offline before."""

    end: float
    client: int
    version: int
    start: float
    lost: bool


@dataclass
class Events:
    """What one round's events did: who started a task (and who of them will finish it),
    whose updates arrived (and their staleness), whose were discarded as too stale, and
    when the round ended."""

    started: list[int]
    trained: list[int]
    arrived: list[int]
    staleness: list[int]
    too_stale: list[int]
    time: float
    stalled: str | None = None


# Above this many nodes a server draws its clients in time of the draw (a population).
POPULATION = 1 << 16
DRAWN_PER_CLIENT = 4  # nodes drawn per client wanted (and per busy one), before checking


class AsynchronousServer(Strategy):
    """A server that keeps ``concurrency`` clients training and updates its model once
    ``buffer_size`` updates have arrived; subclasses give :meth:`server_update`."""

    num_servers = 1
    server_holds_global_model = True
    handles_churn = True
    round_unit = "server update"
    buffer_size: int = 1
    counted: ClassVar[tuple[str, ...]] = ("updates_applied", "updates_dropped", "updates_lost")

    def __init__(
        self,
        concurrency: int,
        local_epochs: int | None,
        local_steps: int | None,
        max_staleness: int | None,
        fresh_optimizer: bool,
    ) -> None:
        check(concurrency >= 1, f"strategy.concurrency={concurrency} must be >= 1")
        check(
            max_staleness is None or max_staleness >= 0,
            f"strategy.max_staleness={max_staleness} must be >= 0 (or null)",
        )
        self.concurrency, self.max_staleness = concurrency, max_staleness
        self.local_epochs, self.local_steps = local_work(local_epochs, local_steps)
        self.fresh_optimizer = fresh_optimizer
        self.tasks: list[Task] = []
        self.version, self.now = 0, 0.0
        self.counts = dict.fromkeys(self.counted + BIN_NAMES, 0)
        self.staleness_sum, self.staleness_max = 0, 0

    def validate(self, federation: Federation) -> None:
        for name, value in (("concurrency", self.concurrency), ("buffer_size", self.buffer_size)):
            check(
                value <= federation.num_nodes,
                f"strategy.{name}={value} must be <= num_nodes={federation.num_nodes}",
            )

    def plan(self, round_idx: int, federation: Federation) -> RoundPlan:
        events = self.events(round_idx, federation)
        server = np.array([federation.num_nodes])
        steps: list[Step] = []
        if events.started:
            started = np.sort(np.array(events.started))
            steps.append(Average(server, started, np.ones(1), base=BASE))
            trained = np.sort(np.array(events.trained, dtype=np.int64))
            if len(trained):
                steps.append(self.local_training(trained))
        steps += [Average(np.array([client]), server, np.zeros(1), base=BASE)
                  for client in events.too_stale]  # fmt: skip
        if len(events.arrived) == self.buffer_size:
            order = np.argsort(events.arrived, kind="stable")
            arrived = np.array(events.arrived)[order]
            staleness = np.array(events.staleness)[order]
            steps.append(self.server_update(arrived, staleness, server))
            self.version += 1
            self._count(staleness)
        self.now = events.time
        return RoundPlan(tuple(steps), finished_at=events.time, stalled=events.stalled)

    def held_nodes(self) -> np.ndarray | None:
        """The clients training now (their models in flight), with a fresh optimizer each."""
        if not self.fresh_optimizer:
            return None
        return np.array(sorted(task.client for task in self.tasks), dtype=np.int64)

    def local_training(self, clients: np.ndarray) -> Train:
        """What the clients do with the model they downloaded."""
        return Train(
            clients,
            epochs=self.local_epochs,
            steps=self.local_steps,
            fresh_optimizer=self.fresh_optimizer,
        )

    @abstractmethod
    def server_update(
        self, arrived: np.ndarray, staleness: np.ndarray, server: np.ndarray
    ) -> Average:
        """The step that applies the updates of the clients ``arrived`` (sorted), each
        ``staleness`` server versions old."""

    def events(self, round_idx: int, federation: Federation) -> Events:
        """Run the event loop from the last update until ``buffer_size`` updates are in."""
        generator = rng.generator(federation.seed, rng.SAMPLING, round_idx)
        clock = Clock(
            federation.network, federation.num_nodes + 1, federation, federation.batch_size
        )
        events = Events([], [], [], [], [], self.now)
        waiting: set[int] = set()  # in the server's buffer, or discarded there this round
        churn = federation.churn
        while True:
            while self.tasks and self.tasks[0].end <= events.time:
                self._arrive(heapq.heappop(self.tasks), events, waiting)
                if len(events.arrived) == self.buffer_size:
                    return events
            self._start(events, waiting, generator, clock, federation)
            upcoming = [self.tasks[0].end] if self.tasks else []
            if churn is not None and len(self.tasks) < self.concurrency:
                later = int(np.searchsorted(churn.times, events.time, side="right"))
                upcoming += churn.times[later : later + 1].tolist()  # someone may join
            if not upcoming:
                events.stalled = (
                    f"no client can train: {len(events.arrived)} of strategy.buffer_size="
                    f"{self.buffer_size} updates arrived and nobody is up to train"
                )
                return events
            events.time = float(min(upcoming))

    def _arrive(self, task: Task, events: Events, waiting: set[int]) -> None:
        if task.lost:
            self.counts["updates_dropped"] += 1
            self.counts["updates_lost"] += 1
            return
        staleness = self.version - task.version
        waiting.add(task.client)
        if self.max_staleness is not None and staleness > self.max_staleness:
            self.counts["updates_dropped"] += 1
            events.too_stale.append(task.client)
            return
        events.arrived.append(task.client)
        events.staleness.append(staleness)

    def _start(
        self,
        events: Events,
        waiting: set[int],
        generator: np.random.Generator,
        clock: Clock,
        federation: Federation,
    ) -> None:
        """Fill the free slots at ``events.time`` with clients drawn uniformly from those up,
        not training and not waiting at the server."""
        free = self.concurrency - len(self.tasks)
        if free <= 0:
            return
        time = events.time
        churn = federation.churn
        busy = [task.client for task in self.tasks] + sorted(waiting)
        chosen = None
        if federation.num_nodes > POPULATION:
            chosen = _drawn_from_population(generator, free, busy, time, federation)
        if chosen is None:  # every node checked: the up ones, not busy
            up = np.ones(federation.num_nodes, bool) if churn is None else churn.alive(time)
            up[busy] = False
            candidates = np.flatnonzero(up)
            chosen = generator.choice(candidates, min(free, len(candidates)), replace=False)
        durations = clock.task_times(
            chosen,
            self.local_epochs,
            self.local_steps,
            federation.bytes_on("downlink"),
            federation.bytes_on("uplink"),
        )
        for client, duration in zip(chosen.tolist(), durations.tolist(), strict=True):
            end = time + duration
            lost = self._goes_offline(client, time, end, federation)
            heapq.heappush(self.tasks, Task(end, client, self.version, time, lost))
            events.started.append(client)
            if not lost:  # a client that will not finish need not train
                events.trained.append(client)

    @staticmethod
    def _goes_offline(client: int, start: float, end: float, federation: Federation) -> bool:
        """Whether ``client`` crashes or leaves in (start, end]."""
        if federation.churn is None:
            return False
        return any(
            event.node == client and event.kind != JOIN
            for event in federation.churn.events_between(start, end)
        )

    def _count(self, staleness: np.ndarray) -> None:
        self.counts["updates_applied"] += len(staleness)
        self.staleness_sum += int(staleness.sum())
        self.staleness_max = max(self.staleness_max, int(staleness.max(initial=0)))
        bins = np.searchsorted(BIN_EDGES, staleness, side="right") - 1
        for index in bins.tolist():
            self.counts[BIN_NAMES[index]] += 1

    def counters(self) -> dict[str, float]:
        """Updates applied, dropped (lost offline or too stale) and lost offline; the
        staleness of the applied ones (mean, max, histogram), all since the run began."""
        applied = self.counts["updates_applied"]
        return {
            **{name: float(count) for name, count in self.counts.items()},
            "staleness_mean": self.staleness_sum / applied if applied else 0.0,
            "staleness_max": float(self.staleness_max),
        }

    def state(self) -> dict[str, Any]:
        tasks = sorted(self.tasks)
        return {
            "tasks": {
                name: np.array([getattr(task, name) for task in tasks], dtype=kind)
                for name, kind in zip(Task._fields, (float, int, int, float, bool), strict=True)
            },
            "version": self.version,
            "now": self.now,
            "counts": dict(self.counts),
            "staleness_sum": self.staleness_sum,
            "staleness_max": self.staleness_max,
        }

    def restore(self, state: dict[str, Any]) -> None:
        columns = [state["tasks"][name].tolist() for name in Task._fields]
        self.tasks = [Task(*fields) for fields in zip(*columns, strict=True)]
        heapq.heapify(self.tasks)
        self.version, self.now = int(state["version"]), float(state["now"])
        self.counts.update({name: int(count) for name, count in state["counts"].items()})
        self.staleness_sum = int(state["staleness_sum"])
        self.staleness_max = int(state["staleness_max"])


def _drawn_from_population(
    generator: np.random.Generator,
    free: int,
    busy: list[int],
    time: float,
    federation: Federation,
) -> np.ndarray | None:
    """``free`` clients drawn uniformly from those up at ``time`` and not ``busy``, in time
    of the draw: the first eligible ones of a uniformly random ordered sample of all nodes
    (the eligible ones in it are a uniformly random ordered sample of the eligible); None
    when the sample holds too few of them (the caller then checks every node)."""
    count = min(federation.num_nodes, DRAWN_PER_CLIENT * (free + len(busy)))
    drawn = generator.choice(federation.num_nodes, count, replace=False)
    eligible = ~np.isin(drawn, busy)
    if federation.churn is not None:
        eligible &= federation.churn.up(drawn, time)
    chosen = drawn[eligible][:free]
    return chosen if len(chosen) == free else None
