"""The round loop: plan -> execute -> account -> evaluate -> record."""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from fedsim.aggregators import Aggregator, Mean
from fedsim.backends.base import Backend
from fedsim.budget import Budget, LocalSteps
from fedsim.errors import check
from fedsim.federation import Federation
from fedsim.loggers import Logger, NoLogger
from fedsim.messages import MessageTransforms
from fedsim.metrics.recorder import Recorder
from fedsim.metrics.reporters import Reporter
from fedsim.simulated.clock import Clock
from fedsim.strategies.base import Strategy
from fedsim.task import Task
from fedsim.traffic import TrafficCounters

if TYPE_CHECKING:
    from fedsim.privacy import Privacy

ON_DIVERGENCE = ("stop", "continue")
EVALUATIONS = ("average", "individual")  # what the headline accuracy and loss are of


class Interrupted(KeyboardInterrupt):
    """A signal (Ctrl-C's SIGINT, a scheduler's SIGTERM) stopped the run between two rounds."""

    def __init__(self, signal_number: int) -> None:
        super().__init__(signal.Signals(signal_number).name)
        self.signal_number = signal_number


@dataclass
class Simulation:
    """One run: a strategy on a federation, trained by a backend, recorded round by round.

    Metrics are recorded before the first round (round 0), every ``eval_every`` rounds and
    after the last (:class:`~fedsim.metrics.reporters.Reporter`: at most ``eval_nodes``
    nodes' own models are evaluated).  The simulated clock (``sim_time_s``) follows the
    federation's network model; what nodes send is counted by
    :class:`~fedsim.traffic.TrafficCounters`.  A protocol that stalls
    (``RoundPlan.stalled``) ends the run early with its reason in ``stalled``.  With
    ``privacy`` every plan's training becomes noisy local steps
    (:class:`fedsim.privacy.Privacy`) and the privacy spent is recorded.  ``messages``
    rewrite what the rows send (attacks, compression: fedsim.messages).  Non-finite
    parameters after a round, or a non-finite loss, mark the run ``diverged`` and, with
    ``on_divergence="stop"``, end it after recording that round.  The run also ends after
    the round in which the first of its ``budget`` (:class:`~fedsim.budget.Budget`: rounds,
    local steps per node, bytes, simulated or wall time) is spent, named in ``stopped_by``
    (``rounds`` also when it ran all ``rounds``, which cap every budget);
    ``max_sim_time_s`` is ``budget.sim_time_s`` by its older name.  Each evaluation's
    metrics also go to the ``logger`` (:mod:`fedsim.loggers`), under the recorder's run
    directory, with ``settings`` (the run's config) as its description of the run.
    """

    strategy: Strategy
    federation: Federation
    task: Task
    backend: Backend
    rounds: int
    aggregator: Aggregator = field(default_factory=Mean)
    max_sim_time_s: float | None = None
    budget: Budget = field(default_factory=Budget)
    evaluate: str = "average"
    eval_every: int = 1
    eval_nodes: int = 100
    checkpoint_every: int = 0
    label_histograms: np.ndarray | None = None
    privacy: Privacy | None = None
    messages: MessageTransforms = field(default_factory=MessageTransforms)
    on_divergence: str = "stop"
    logger: Logger = field(default_factory=NoLogger)
    settings: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=lambda: {"train_s": 0.0, "eval_s": 0.0})
    rounds_completed: int = 0
    stalled: str | None = None
    diverged: str | None = None
    stopped_by: str | None = None

    def __post_init__(self) -> None:
        check(self.rounds >= 0, f"rounds={self.rounds} must be >= 0")
        check(
            self.max_sim_time_s is None or self.max_sim_time_s > 0,
            f"max_sim_time_s={self.max_sim_time_s} must be > 0 (or null: no limit)",
        )
        check(self.eval_every >= 1, f"eval_every={self.eval_every} must be >= 1")
        check(self.eval_nodes >= 1, f"eval_nodes={self.eval_nodes} must be >= 1")
        check(
            self.evaluate in EVALUATIONS,
            f"evaluate={self.evaluate} is not one of: {', '.join(EVALUATIONS)}",
        )
        check(self.checkpoint_every >= 0, f"checkpoint_every={self.checkpoint_every} must be >= 0")
        check(
            self.on_divergence in ON_DIVERGENCE,
            f"on_divergence={self.on_divergence} must be one of {', '.join(ON_DIVERGENCE)}",
        )
        self.budget = self.budget.tightened(rounds=self.rounds, sim_time_s=self.max_sim_time_s)

    @property
    def num_rows(self) -> int:
        return self.federation.num_nodes + self.strategy.num_servers

    def run(
        self,
        recorder: Recorder,
        progress: bool = True,
        checkpoint: Callable[[dict[str, Any]], None] | None = None,
        resume: dict[str, Any] | None = None,
    ) -> dict[str, float]:
        """Run the remaining rounds, recording metrics; returns the last evaluation's aggregates.

        Every ``checkpoint_every`` rounds, after the last round, and when Ctrl-C stops the
        run (between two rounds), :meth:`state` is handed to ``checkpoint``.  With
        ``resume`` (a saved state) the run continues after that state's round and records
        exactly what an uninterrupted run would have, since all randomness derives from
        (seed, round, node); ``resume`` is emptied once restored (its tensors freed).
        """
        self._start()
        resumed_round = None if resume is None else resume["rounds_completed"]
        self.logger.start(recorder.path.parent, self.settings, resumed_round)
        try:
            return self._run(recorder, progress, checkpoint, resume)
        finally:
            self.logger.close()

    def _run(
        self,
        recorder: Recorder,
        progress: bool,
        checkpoint: Callable[[dict[str, Any]], None] | None,
        resume: dict[str, Any] | None,
    ) -> dict[str, float]:
        if resume is None:
            final = self._evaluate(0, recorder)
        else:
            final = self.restore(resume)
            resume.clear()  # consumed: its copies of the rows are freed for the run
        with _progress_bar(progress) as bar, _deferred_interrupt() as interrupted:
            task_id = bar.add_task(
                "rounds", total=self.budget.rounds, completed=self.rounds_completed
            )
            for round_idx in range(self.rounds_completed, self.rounds):
                if self._spent():  # a resumed run whose budget was spent already
                    break
                diverging = self._round(round_idx)
                if self._evaluation_due() or diverging:
                    final = self._evaluate(self.rounds_completed, recorder)
                    bar.update(task_id, description=f"accuracy {final['accuracy']:.3f}")
                bar.advance(task_id)
                ended = (
                    self.stalled
                    or (self.diverged and self.on_divergence == "stop")
                    or self._spent()
                )
                if checkpoint is not None and (self._checkpoint_due() or interrupted() or ended):
                    checkpoint(self.state(final))
                if interrupted():
                    raise Interrupted(interrupted())
                if ended:
                    break
        return final

    def _start(self) -> None:
        """Give the backend its rows and set up the reporter, the counters and the clock."""
        self.backend.start(
            self.task,
            self.num_rows,
            self.aggregator,
            self.federation.topology,
            self.messages,
            held=self.strategy.held_nodes(),
        )
        self.reporter = Reporter(
            self.task,
            self.federation,
            self.eval_nodes,
            self.honest,
            self.evaluate,
            replicated=self.strategy.replicated,
        )
        self.traffic = TrafficCounters(
            self.federation.num_nodes,
            self.num_rows,
            self.federation.message_bytes,
            self.federation.link_bytes,
        )
        self.clock = Clock(
            self.federation.network,
            self.num_rows,
            self.task.node_data,
            self.task.optimizer.batch_size,
        )
        self.local_steps = LocalSteps(
            self.task.node_data.num_examples, self.task.optimizer.batch_size
        )
        self.start_time = time.perf_counter()

    def _round(self, round_idx: int) -> bool:
        """Plan, execute and count round ``round_idx``; whether it made the parameters
        non-finite (the run is then ``diverged``)."""
        started = time.perf_counter()
        plan = self.strategy.plan(round_idx, self.federation)
        if self.privacy is not None:
            plan = self.privacy.apply(plan, round_idx)
        self.backend.execute(plan, round_idx)
        self.backend.keep(self.strategy.held_nodes())
        self.traffic.account(plan)
        self.local_steps.account(plan)
        self.clock.advance(
            plan, self.federation.message_bytes, self.strategy.barrier, self.federation.link_bytes
        )
        self.timings["train_s"] += time.perf_counter() - started
        self.rounds_completed = round_idx + 1
        self.stalled = plan.stalled
        diverging = self.diverged is None and not self.backend.all_finite()
        if diverging:
            self.diverged = f"non-finite parameters after round {self.rounds_completed}"
        return diverging

    def _evaluation_due(self) -> bool:
        """Every ``eval_every`` rounds, after the last, when the protocol stalled, and when a
        budget is spent."""
        completed = self.rounds_completed
        last = completed == self.rounds or bool(self.stalled) or self._spent()
        return completed % self.eval_every == 0 or last

    def usage(self) -> dict[str, float]:
        """What the run has spent of each budget so far."""
        return {
            "rounds": self.rounds_completed,
            "local_steps": self.local_steps.mean,
            "bytes": self.traffic.metrics()["bytes_sent_total"],
            "sim_time_s": self.clock.now,
            "wall_time_s": time.perf_counter() - self.start_time,
        }

    def _spent(self) -> bool:
        """Whether a budget is spent (its name kept in ``stopped_by``)."""
        self.stopped_by = self.budget.spent(self.usage())
        return self.stopped_by is not None

    def _checkpoint_due(self) -> bool:
        completed = self.rounds_completed
        return completed == self.rounds or bool(
            self.checkpoint_every and completed % self.checkpoint_every == 0
        )

    def _evaluate(self, round_idx: int, recorder: Recorder) -> dict[str, float]:
        """Record one evaluation (:class:`~fedsim.metrics.reporters.Reporter`); a non-finite
        loss marks the run ``diverged``."""
        started = time.perf_counter()
        metrics = self.reporter.report(
            round_idx,
            recorder,
            self.global_model(),
            self.backend,
            self.traffic,
            sim_time_s=self.clock.now,
            run_started=self.start_time,
            privacy=self.privacy,
            messages=self.messages,
            counters={**self.local_steps.metrics(), **self.strategy.counters()},
        )
        self.logger.log(round_idx, metrics)
        if self.diverged is None and not np.isfinite(metrics["loss"]):
            self.diverged = f"non-finite loss at round {round_idx}"
        self.timings["eval_s"] += time.perf_counter() - started
        return metrics

    def state(self, final: dict[str, float]) -> dict[str, Any]:
        """Everything needed to continue after the last completed round."""
        return {
            "rounds_completed": self.rounds_completed,
            "backend": self.backend.state(),
            **self.traffic.state(),
            **self.local_steps.state(),
            "clock": self.clock.state(),
            "strategy": self.strategy.state(),
            "privacy": None if self.privacy is None else self.privacy.state(),
            "messages": self.messages.state(),
            "stalled": self.stalled,
            "diverged": self.diverged,
            "timings": dict(self.timings),
            "elapsed_s": time.perf_counter() - self.start_time,
            "final": dict(final),
        }

    def check_resumable(self, state: dict[str, Any]) -> None:
        """Refuse, in one line, a saved :meth:`state` that this run cannot continue from."""
        saved = state.get("backend", {}) if isinstance(state, dict) else {}
        params, pool = saved.get("params"), saved.get("pool")
        rows = self.num_rows if pool is None else pool["capacity"] + self.strategy.num_servers
        shape = (rows, self.task.layout.size)
        check(
            isinstance(params, torch.Tensor) and tuple(params.shape) == shape,
            f"the checkpoint holds no {shape[0]} x {shape[1]} parameters (this run's)",
        )
        completed = state["rounds_completed"]
        check(
            0 <= completed <= self.rounds,
            f"the checkpoint is at round {completed}, outside this run's 0..{self.rounds}",
        )

    def restore(self, state: dict[str, Any]) -> dict[str, float]:
        """Continue from a :meth:`state`; returns the metrics of its last evaluation."""
        self.rounds_completed = state["rounds_completed"]
        self.backend.restore(state["backend"])
        self.traffic.restore(state)
        self.local_steps.restore(state)
        self.clock.restore(state["clock"])
        self.strategy.restore(state["strategy"])
        if self.privacy is not None:
            self.privacy.restore(state["privacy"])
        self.messages.restore(state.get("messages", [{}] * len(self.messages.chain)))
        self.stalled = state["stalled"]
        self.diverged = state.get("diverged")
        self.timings.update(state["timings"])
        self.start_time -= state["elapsed_s"]
        return dict(state["final"])

    def node_totals(self) -> dict[str, np.ndarray]:
        """Per node over the run so far: model bytes, control bytes and aggregations."""
        return self.traffic.node_totals()

    @property
    def honest(self) -> np.ndarray | None:
        """The nodes that do not attack, when some do (None: all are honest)."""
        byzantine = self.messages.byzantine_nodes()
        if not len(byzantine):
            return None
        return np.setdiff1d(np.arange(self.federation.num_nodes), byzantine)

    def global_model(self) -> torch.Tensor:
        """The server's model when it holds the global one (FedAvg), else the honest nodes'
        average."""
        num_nodes = self.federation.num_nodes
        row = self.strategy.global_model_row(num_nodes)
        if row is not None:
            return self.backend.rows(slice(row, row + 1))[0]
        return self.backend.node_mean(num_nodes, self.honest)


@contextlib.contextmanager
def _deferred_interrupt() -> Iterator[Callable[[], int | None]]:
    """Turn Ctrl-C (SIGINT) and SIGTERM into a flag checked between rounds, so a round is
    never cut in half; the flag is the first signal's number, or None."""
    if threading.current_thread() is not threading.main_thread():
        yield lambda: None
        return
    caught: list[int] = []
    stops = (signal.SIGINT, signal.SIGTERM)
    previous = {
        stop: signal.signal(stop, lambda number, _: caught.append(number)) for stop in stops
    }
    try:
        yield lambda: caught[0] if caught else None
    finally:
        for stop, handler in previous.items():
            signal.signal(stop, handler)


def _progress_bar(enabled: bool) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        disable=not enabled,
        transient=False,
    )
