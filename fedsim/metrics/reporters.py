"""What one evaluation of a run records: the models' accuracy, the traffic, the run's counters."""

from __future__ import annotations

import hashlib
import time
from typing import TYPE_CHECKING

import numpy as np
import torch

from fedsim import rng
from fedsim.training.evaluate import Evaluator

if TYPE_CHECKING:
    from fedsim.backends.base import Backend
    from fedsim.federation import Federation
    from fedsim.messages import MessageTransforms
    from fedsim.metrics.recorder import Recorder
    from fedsim.privacy import Privacy
    from fedsim.task import Task
    from fedsim.traffic import TrafficCounters


class Reporter:
    """Evaluates the global model and the models of a fixed sample of nodes on the test set,
    and records them with the traffic and counters of the run as one evaluation's rows.

    At most ``eval_nodes`` nodes' own models are evaluated: all of them, or a sample drawn
    from the seed.  With several components in the topology each one's mean accuracy over
    its evaluated nodes is reported too.  Under attack only the ``honest`` nodes count:
    the sample, the consensus distance and the nodes' average are theirs (the node
    statistics are also recorded as ``honest_node_accuracy_mean|min``); the first
    evaluation marks each Byzantine node with a per-node ``byzantine`` row of value 1.
    With ``evaluate="individual"`` the headline ``accuracy`` and ``loss`` are the mean of
    the evaluated nodes' own models' (as decentralized papers' code scores decentralized
    learning), and the global model's are recorded as ``global_accuracy|loss``.
    """

    def __init__(
        self,
        task: Task,
        federation: Federation,
        eval_nodes: int,
        honest: np.ndarray | None = None,
        evaluate: str = "average",
        replicated: bool = False,
    ) -> None:
        dataset = task.dataset
        self.evaluator = Evaluator(
            task.model,
            task.layout,
            dataset.test_x,
            dataset.test_y,
            vectorise=task.prefers_vectorised(),
        )
        self.num_nodes, self.honest, self.evaluate = federation.num_nodes, honest, evaluate
        self.seed, self.eval_nodes, self.replicated = federation.seed, eval_nodes, replicated
        self.nodes = evaluated_nodes(federation, eval_nodes, honest)
        self.components = evaluated_components(federation, self.nodes)

    def report(
        self,
        round_idx: int,
        recorder: Recorder,
        global_model: torch.Tensor,
        backend: Backend,
        traffic: TrafficCounters,
        sim_time_s: float,
        run_started: float,
        privacy: Privacy | None = None,
        messages: MessageTransforms | None = None,
        counters: dict[str, float] | None = None,
    ) -> dict[str, float]:
        """Record round ``round_idx``'s metrics and per-node metrics; returns the metrics.

        ``global_model`` is the model to evaluate, ``run_started`` the ``perf_counter`` time
        the run started at (for ``wall_time_s``); ``counters`` the strategy's.
        """
        accuracy, loss = self.evaluator.model(global_model)
        nodes = self.held(backend.held_nodes(), round_idx)
        node_scores = self.evaluator.scores(backend.rows(nodes))
        node_accuracy, node_loss = (score.cpu().numpy() for score in node_scores)
        individual, node_metrics = {}, {}
        if self.evaluate == "individual":
            individual = {"global_accuracy": accuracy, "global_loss": loss}
            accuracy, loss = float(node_accuracy.mean()), float(node_loss.mean())
        if len(nodes):
            node_metrics = {
                "node_accuracy_mean": float(node_accuracy.mean()),
                "node_accuracy_min": float(node_accuracy.min()),
                "node_accuracy_max": float(node_accuracy.max()),
                "consensus_distance": backend.consensus_distance(self.num_nodes, self.honest),
            }
        metrics = {
            "sim_time_s": sim_time_s,
            "accuracy": accuracy,
            "loss": loss,
            **individual,
            **node_metrics,
            **traffic.metrics(),
            **traffic.compression_ratio(),
            **(messages.metrics() if messages is not None else {}),
            **{
                f"component_{index}_accuracy": float(node_accuracy[positions].mean())
                for index, positions in enumerate(self.components)
                if len(positions) and nodes is self.nodes
            },
            **{
                f"correction_factor_{name}": factor
                for name, factor in backend.correction_factors().items()
            },
            "wall_time_s": time.perf_counter() - run_started,
        }
        if self.honest is not None and len(nodes):  # the same, named for what they are under attack
            metrics["honest_node_accuracy_mean"] = metrics["node_accuracy_mean"]
            metrics["honest_node_accuracy_min"] = metrics["node_accuracy_min"]
        if self.replicated:  # every node's replica, read whole
            replicas = backend.rows(np.arange(self.num_nodes))
            metrics["replicas_distinct"] = float(distinct_models(replicas))
        if privacy is not None:
            metrics.update(privacy.metrics(round_idx))
        metrics.update(backend.counters())
        metrics.update(counters or {})
        for name, value in metrics.items():
            recorder.add(round_idx, name, value)
        recorder.extend(round_idx, "node_accuracy", node_accuracy, nodes=nodes)
        if round_idx == 0 and self.honest is not None:
            byzantine = np.setdiff1d(np.arange(self.num_nodes), self.honest)
            recorder.extend(round_idx, "byzantine", np.ones(len(byzantine)), nodes=byzantine)
        for name, values in traffic.node_metrics(nodes).items():
            recorder.extend(round_idx, name, values, nodes=nodes)
        recorder.flush()
        return metrics

    def held(self, held: np.ndarray | None, round_idx: int) -> np.ndarray:
        """The nodes whose own models are evaluated: the fixed sample where every node has a
        row (``held`` None); with rows on demand, at most ``eval_nodes`` of the (honest)
        nodes that hold one now, drawn from (seed, round)."""
        if held is None:
            return self.nodes
        if self.honest is not None:
            held = np.intersect1d(held, self.honest)
        if len(held) <= self.eval_nodes:
            return held
        generator = rng.generator(self.seed, rng.EVALUATION, round_idx)
        return np.sort(generator.choice(held, self.eval_nodes, replace=False))


def distinct_models(rows: torch.Tensor) -> int:
    """How many bitwise different models the (n, d) ``rows`` hold, by a hash of each one's
    bytes (BLAKE2b): 1 when every replica is the same to the bit."""
    values = rows.detach().cpu().contiguous().numpy()
    return len({hashlib.blake2b(row.tobytes(), digest_size=16).digest() for row in values})


def evaluated_nodes(
    federation: Federation, eval_nodes: int, candidates: np.ndarray | None = None
) -> np.ndarray:
    """The nodes whose own models are evaluated: every node (of ``candidates``, where
    given), or ``eval_nodes`` of them drawn from the seed, in order."""
    if candidates is None:
        candidates = np.arange(federation.num_nodes)
    if len(candidates) <= eval_nodes:
        return candidates
    chosen = rng.generator(federation.seed, rng.EVALUATION).choice(
        candidates, eval_nodes, replace=False
    )
    return np.sort(chosen)


def evaluated_components(federation: Federation, nodes: np.ndarray) -> list[np.ndarray]:
    """Per component of the topology (if there are several): the positions in ``nodes`` of
    its evaluated nodes."""
    topology = federation.topology
    if topology is None or len(topology.components()) < 2:
        return []
    membership = np.empty(federation.num_nodes, dtype=np.int64)
    for index, members in enumerate(topology.components()):
        membership[members] = index
    evaluated = membership[nodes]
    return [np.flatnonzero(evaluated == index) for index in range(len(topology.components()))]
