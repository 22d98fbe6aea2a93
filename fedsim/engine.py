"""The round loop: plan -> execute -> account -> evaluate -> record."""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from fedsim import rng
from fedsim.aggregators import Aggregator, Mean
from fedsim.backends.base import Backend
from fedsim.errors import check
from fedsim.federation import Federation
from fedsim.metrics.recorder import Recorder
from fedsim.plans import RoundPlan
from fedsim.privacy import Privacy
from fedsim.simulated.clock import Clock
from fedsim.strategies.base import Strategy
from fedsim.task import Task
from fedsim.training.evaluate import Evaluator

CHANNELS = ("d2d", "uplink", "downlink")
ON_DIVERGENCE = ("stop", "continue")


class Interrupted(KeyboardInterrupt):
    """A signal (Ctrl-C's SIGINT, a scheduler's SIGTERM) stopped the run between two rounds."""

    def __init__(self, signal_number: int) -> None:
        super().__init__(signal.Signals(signal_number).name)
        self.signal_number = signal_number


@dataclass
class Simulation:
    """One run: a strategy on a federation, trained by a backend, recorded round by round.

    Metrics are recorded before the first round (round 0), every ``eval_every`` rounds and
    after the last.  ``eval_nodes`` caps how many nodes' own models are evaluated (a fixed
    sample drawn from the seed when there are more nodes).  The simulated clock
    (``sim_time_s``) follows the federation's network model; bytes are counted per row as
    model bytes (the federation's ``message_bytes`` per model message) and control bytes by
    kind (views, pings, membership announcements).
    A protocol that stalls (``RoundPlan.stalled``) ends the run early with its reason in
    ``stalled``.  With ``privacy`` every plan's training becomes noisy local steps
    (:class:`fedsim.privacy.Privacy`) and the privacy spent is recorded.  Non-finite
    parameters after a round, or a non-finite loss, mark the run ``diverged`` and, with
    ``on_divergence="stop"``, end it after recording that round.
    """

    strategy: Strategy
    federation: Federation
    task: Task
    backend: Backend
    rounds: int
    aggregator: Aggregator = field(default_factory=Mean)
    eval_every: int = 1
    eval_nodes: int = 100
    checkpoint_every: int = 0
    label_histograms: np.ndarray | None = None
    privacy: Privacy | None = None
    on_divergence: str = "stop"
    timings: dict[str, float] = field(default_factory=lambda: {"train_s": 0.0, "eval_s": 0.0})
    rounds_completed: int = 0
    stalled: str | None = None
    diverged: str | None = None

    def __post_init__(self) -> None:
        check(self.rounds >= 0, f"rounds={self.rounds} must be >= 0")
        check(self.eval_every >= 1, f"eval_every={self.eval_every} must be >= 1")
        check(self.eval_nodes >= 1, f"eval_nodes={self.eval_nodes} must be >= 1")
        check(self.checkpoint_every >= 0, f"checkpoint_every={self.checkpoint_every} must be >= 0")
        check(
            self.on_divergence in ON_DIVERGENCE,
            f"on_divergence={self.on_divergence} must be one of {', '.join(ON_DIVERGENCE)}",
        )

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
        self.backend.start(self.task, self.num_rows, self.aggregator, self.federation.topology)
        self.evaluator = Evaluator(
            self.task.model, self.task.layout, self.task.dataset.test_x, self.task.dataset.test_y
        )
        self.evaluated_nodes = self._evaluated_nodes()
        self.components = self._evaluated_components()
        self.bytes_sent = np.zeros(self.num_rows, dtype=np.float64)  # float: no silent overflow
        self.bytes_control: dict[str, np.ndarray] = {}
        self.aggregations = np.zeros(self.num_rows, dtype=np.int64)
        self.bytes_by_channel = dict.fromkeys(CHANNELS, 0)
        self.clock = Clock(
            self.federation.network,
            self.num_rows,
            self.task.node_data,
            self.task.optimizer.batch_size,
        )
        self.start_time = time.perf_counter()
        if resume is None:
            final = self._evaluate(0, recorder)
        else:
            final = self.restore(resume)
            resume.clear()  # consumed: its copies of the rows are freed for the run
        with _progress_bar(progress) as bar, _deferred_interrupt() as interrupted:
            task_id = bar.add_task("rounds", total=self.rounds, completed=self.rounds_completed)
            for round_idx in range(self.rounds_completed, self.rounds):
                started = time.perf_counter()
                plan = self.strategy.plan(round_idx, self.federation)
                if self.privacy is not None:
                    plan = self.privacy.apply(plan, round_idx)
                self.backend.execute(plan, round_idx)
                self._account(plan)
                self.clock.advance(plan, self.federation.message_bytes, self.strategy.barrier)
                self.timings["train_s"] += time.perf_counter() - started
                self.rounds_completed = round_idx + 1
                self.stalled = plan.stalled
                diverging = self.diverged is None and not self.backend.all_finite()
                if diverging:
                    self.diverged = f"non-finite parameters after round {self.rounds_completed}"
                if (
                    self.rounds_completed % self.eval_every == 0
                    or self.rounds_completed == self.rounds
                    or self.stalled
                    or diverging
                ):
                    final = self._evaluate(self.rounds_completed, recorder)
                    bar.update(task_id, description=f"accuracy {final['accuracy']:.3f}")
                bar.advance(task_id)
                ended = self.stalled or (self.diverged and self.on_divergence == "stop")
                due = self.rounds_completed == self.rounds or (
                    self.checkpoint_every and self.rounds_completed % self.checkpoint_every == 0
                )
                if checkpoint is not None and (due or interrupted() or ended):
                    checkpoint(self.state(final))
                if interrupted():
                    raise Interrupted(interrupted())
                if ended:
                    break
        return final

    def state(self, final: dict[str, float]) -> dict[str, Any]:
        """Everything needed to continue after the last completed round."""
        return {
            "rounds_completed": self.rounds_completed,
            "backend": self.backend.state(),
            "bytes_sent": self.bytes_sent.copy(),
            "bytes_control": {kind: sent.copy() for kind, sent in self.bytes_control.items()},
            "aggregations": self.aggregations.copy(),
            "bytes_by_channel": dict(self.bytes_by_channel),
            "clock": self.clock.state(),
            "strategy": self.strategy.state(),
            "privacy": None if self.privacy is None else self.privacy.state(),
            "stalled": self.stalled,
            "diverged": self.diverged,
            "timings": dict(self.timings),
            "elapsed_s": time.perf_counter() - self.start_time,
            "final": dict(final),
        }

    def check_resumable(self, state: dict[str, Any]) -> None:
        """Refuse, in one line, a saved :meth:`state` that this run cannot continue from."""
        params = state.get("backend", {}).get("params") if isinstance(state, dict) else None
        shape = (self.num_rows, self.task.layout.size)
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
        self.bytes_sent = state["bytes_sent"].copy()
        self.bytes_control = {kind: sent.copy() for kind, sent in state["bytes_control"].items()}
        self.aggregations = state["aggregations"].copy()
        self.bytes_by_channel = dict(state["bytes_by_channel"])
        self.clock.restore(state["clock"])
        self.strategy.restore(state["strategy"])
        if self.privacy is not None:
            self.privacy.restore(state["privacy"])
        self.stalled = state["stalled"]
        self.diverged = state.get("diverged")
        self.timings.update(state["timings"])
        self.start_time -= state["elapsed_s"]
        return dict(state["final"])

    def _account(self, plan: RoundPlan) -> None:
        """Count model bytes per row and channel, control bytes per kind, and aggregations:
        from the protocol's own traffic when it gives one, else from the plan's steps."""
        traffic, size = plan.traffic, self.federation.message_bytes
        if traffic is not None:
            sent = _rows(traffic.model_messages, self.num_rows) * float(size)
            self.bytes_sent += sent
            self.bytes_by_channel["d2d"] += float(sent.sum())
            self.aggregations += _rows(traffic.aggregations, self.num_rows)
            for kind, control in traffic.control_bytes.items():
                total = self.bytes_control.setdefault(kind, np.zeros(self.num_rows))
                total += _rows(control, self.num_rows)
            return
        for step in plan.steps:
            messages = step.messages(self.federation.num_nodes)
            sent = messages.sent(self.num_rows) * size
            self.bytes_sent += sent
            self.aggregations += messages.aggregations(self.num_rows)
            if messages.link is not None:
                self.bytes_by_channel[messages.link] += float(sent.sum())

    def node_totals(self) -> dict[str, np.ndarray]:
        """Per node over the run so far: model bytes, control bytes and aggregations."""
        num_nodes = self.federation.num_nodes
        control = sum(self.bytes_control.values(), np.zeros(self.num_rows))
        return {
            "node": np.arange(num_nodes),
            "bytes_model": self.bytes_sent[:num_nodes].copy(),
            "bytes_control": control[:num_nodes],
            "aggregations": self.aggregations[:num_nodes].copy(),
        }

    def _evaluated_components(self) -> list[np.ndarray]:
        """Per component of the topology (if there are several): its evaluated nodes' positions."""
        topology = self.federation.topology
        if topology is None or len(topology.components()) < 2:
            return []
        membership = np.empty(self.federation.num_nodes, dtype=np.int64)
        for index, members in enumerate(topology.components()):
            membership[members] = index
        evaluated = membership[self.evaluated_nodes]
        return [np.flatnonzero(evaluated == index) for index in range(len(topology.components()))]

    def _evaluated_nodes(self) -> np.ndarray:
        num_nodes = self.federation.num_nodes
        if num_nodes <= self.eval_nodes:
            return np.arange(num_nodes)
        chosen = rng.generator(self.federation.seed, rng.EVALUATION).choice(
            num_nodes, self.eval_nodes, replace=False
        )
        return np.sort(chosen)

    def global_model(self) -> torch.Tensor:
        """The server's model when it holds the global one (FedAvg), else the nodes' average."""
        num_nodes = self.federation.num_nodes
        row = self.strategy.global_model_row(num_nodes)
        if row is not None:
            return self.backend.rows(slice(row, row + 1))[0]
        return self.backend.node_mean(num_nodes)

    def _evaluate(self, round_idx: int, recorder: Recorder) -> dict[str, float]:
        started = time.perf_counter()
        num_nodes = self.federation.num_nodes
        accuracy, loss = self.evaluator.model(self.global_model())
        node_accuracy = (
            self.evaluator.accuracies(self.backend.rows(self.evaluated_nodes)).cpu().numpy()
        )
        control = sum(self.bytes_control.values(), np.zeros(self.num_rows))
        metrics = {
            "sim_time_s": self.clock.now,
            "accuracy": accuracy,
            "loss": loss,
            "node_accuracy_mean": float(node_accuracy.mean()),
            "node_accuracy_min": float(node_accuracy.min()),
            "node_accuracy_max": float(node_accuracy.max()),
            "consensus_distance": self.backend.consensus_distance(num_nodes),
            "bytes_sent_total": float(self.bytes_sent.sum() + control.sum()),
            "bytes_sent_max_node": float((self.bytes_sent + control)[:num_nodes].max()),
            "bytes_model_total": float(self.bytes_sent.sum()),
            "bytes_control_total": float(control.sum()),
            **{
                f"bytes_{kind}_total": float(sent.sum())
                for kind, sent in self.bytes_control.items()
            },
            "aggregations_max_node": float(self.aggregations[:num_nodes].max()),
            **{f"bytes_{link}_total": float(sent) for link, sent in self.bytes_by_channel.items()},
            **{
                f"component_{index}_accuracy": float(node_accuracy[positions].mean())
                for index, positions in enumerate(self.components)
                if len(positions)
            },
            **{
                f"correction_factor_{name}": factor
                for name, factor in self.backend.correction_factors().items()
            },
            "wall_time_s": time.perf_counter() - self.start_time,
        }
        if self.privacy is not None:
            metrics.update(self.privacy.metrics(round_idx))
        if self.diverged is None and not np.isfinite(loss):
            self.diverged = f"non-finite loss at round {round_idx}"
        metrics.update(self.backend.counters())
        for name, value in metrics.items():
            recorder.add(round_idx, name, value)
        evaluated = self.evaluated_nodes
        recorder.extend(round_idx, "node_accuracy", node_accuracy, nodes=evaluated)
        for name, values in (
            ("node_bytes_model", self.bytes_sent[evaluated]),
            ("node_bytes_control", control[evaluated]),
            ("node_aggregations", self.aggregations[evaluated].astype(np.float64)),
        ):
            recorder.extend(round_idx, name, values, nodes=evaluated)
        recorder.flush()
        self.timings["eval_s"] += time.perf_counter() - started
        return metrics


def _rows(per_node: np.ndarray, num_rows: int) -> np.ndarray:
    """A per-node array padded with zeros for the server rows."""
    padded = np.zeros(num_rows, dtype=np.asarray(per_node).dtype)
    padded[: len(per_node)] = per_node
    return padded


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
