"""The Ray backend: the same plans, with the rows of the federation spread over Ray actors.

Each actor (:class:`~fedsim.backends.shard.Shard`) owns a shard of rows (parameters,
optimizer states, merge buffers) and trains them with the local backend's code.  A mixing step
moves only what crosses shards, as numpy arrays through Ray's object store: the rows a
shard's nodes receive from other shards, or one average row per server-style average.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np
import scipy.sparse as sp
import torch

from fedsim.aggregators import Aggregator, Mean
from fedsim.backends.base import combined_average, one_each, rebased
from fedsim.backends.local import check_plain_gossip, check_training_settings
from fedsim.backends.pool import check_rows_setting, rows_used
from fedsim.backends.ray_local import init_local_ray
from fedsim.backends.shard import Shard, average_of, package_directory
from fedsim.errors import RunError, check
from fedsim.messages import DOWNLOADED, MessageTransforms, Outgoing
from fedsim.plans import Aggregate, Average, Gossip, Merge, Push, RoundPlan, Step, Train
from fedsim.server_optimizers import server_step
from fedsim.task import Task
from fedsim.topology.base import Topology

FLOAT_BYTES = 4


class RayBackend:
    """Executes round plans on ``num_actors`` Ray actors, each holding a shard of rows.

    Parameters
    ----------
    num_actors:
        Actors (shards); nodes are ordered so that graph neighbours share a shard (reverse
        Cuthill-McKee on the topology) and cut into contiguous, equal shards.
    cpus_per_actor, gpus_per_actor:
        Ray resources of each actor (fractional GPUs allowed): an actor with a GPU moves its
        rows, model and data onto it; asking for more GPUs than exist is refused.
    address:
        None starts a local Ray that listens on 127.0.0.1 only (dashboard off, quiet);
        ``auto`` or ``ray://host:port`` joins an existing cluster.
    chunk_size, vectorise, rows:
        As for the local backend, inside each actor (with rows on demand each shard holds
        the rows its nodes use).

    Message transforms (attack, compression) run here, in the driver, as in the local
    backend: a step's sent rows and their senders' states are gathered from the shards,
    rewritten, and the states written back (so an omniscient attack sees every message).
    """

    def __init__(
        self,
        num_actors: int = 2,
        cpus_per_actor: float = 1.0,
        gpus_per_actor: float = 0.0,
        address: str | None = None,
        chunk_size: int | str | None = None,
        vectorise: bool | str = "auto",
        rows: str = "all",
    ) -> None:
        check_rows_setting(rows)
        self.row_layout = rows
        check(num_actors >= 1, f"backend.num_actors={num_actors} must be >= 1")
        check(cpus_per_actor > 0, f"backend.cpus_per_actor={cpus_per_actor} must be > 0")
        check(gpus_per_actor >= 0, f"backend.gpus_per_actor={gpus_per_actor} must be >= 0")
        check(
            gpus_per_actor == 0 or address is not None or _local_gpus() > 0,
            f"backend.gpus_per_actor={gpus_per_actor} but this machine has no CUDA GPU; "
            "use backend.gpus_per_actor=0 (or join a cluster with GPUs: backend.address)",
        )
        check_training_settings(chunk_size, vectorise)
        self.num_actors, self.address = num_actors, address
        self.cpus_per_actor, self.gpus_per_actor = cpus_per_actor, gpus_per_actor
        self.chunk_size, self.vectorise = chunk_size, vectorise
        self.actors: list[Any] = []

    # --- life cycle ----------------------------------------------------------------------

    def start(
        self,
        task: Task,
        num_rows: int,
        aggregator: Aggregator | None = None,
        topology: Topology | None = None,
        messages: MessageTransforms | None = None,
        held: np.ndarray | None = None,
    ) -> None:
        """Start Ray if needed, cut the rows into shards and give each actor its rows (with
        rows on demand, only the servers' at first: ``held`` as for the local backend)."""
        import ray

        self._ray = ray
        self._owns_ray = not ray.is_initialized()
        if self._owns_ray and self.address is None:
            init_local_ray(max(1, int(np.ceil(self.num_actors * self.cpus_per_actor))))
        elif self._owns_ray:
            ray.init(
                address=self.address,
                include_dashboard=False,
                logging_level=logging.ERROR,
                log_to_driver=False,
            )
        gpus = ray.cluster_resources().get("GPU", 0)
        check(
            self.gpus_per_actor * self.num_actors <= gpus,
            f"backend.gpus_per_actor={self.gpus_per_actor} x backend.num_actors="
            f"{self.num_actors} needs {self.gpus_per_actor * self.num_actors:g} GPUs; the Ray "
            f"cluster has {gpus:g}",
        )
        self.task, self.aggregator = task, aggregator or Mean()
        self.messages = messages or MessageTransforms()
        self.num_nodes = len(task.node_data.num_examples)  # rows from here on are servers
        self.step_index = 0  # the position of the step being executed in its round's plan
        self.num_rows, self.row_bytes = num_rows, task.layout.size * FLOAT_BYTES
        order = _order(num_rows, topology)
        check(
            self.num_actors <= num_rows,
            f"backend.num_actors={self.num_actors} must be <= the {num_rows} rows",
        )
        self.shards = [np.sort(part) for part in np.array_split(order, self.num_actors)]
        self.owner = np.empty(num_rows, dtype=np.int64)
        for index, rows in enumerate(self.shards):
            self.owner[rows] = index
        actor = ray.remote(num_cpus=self.cpus_per_actor, num_gpus=self.gpus_per_actor)(Shard)
        threads = max(1, int(self.cpus_per_actor))
        self.pooled = self.row_layout == "on_demand" and held is not None
        options = (self.chunk_size, self.vectorise, threads, self.row_layout)
        self.actors = [actor.remote(*options) for _ in self.shards]
        if self.address is None:
            self._check_same_code()
        device = "cuda" if self.gpus_per_actor > 0 else "cpu"  # the actor's, not the driver's
        self._wait(
            [
                (i, a.start.remote(task.to("cpu"), rows, self.aggregator, device, held))
                for i, (a, rows) in enumerate(zip(self.actors, self.shards, strict=True))
            ]
        )
        self.bytes_between_actors = 0.0
        self.server_states: dict[str, dict[str, torch.Tensor]] = {}
        self.factor_sum = np.zeros(len(self.aggregator.tensors(task.layout)))
        self.factor_count = 0

    def close(self) -> None:
        """Stop the actors, and Ray itself if this backend started it."""
        for actor in self.actors:
            self._ray.kill(actor)
        self.actors = []
        if getattr(self, "_owns_ray", False) and self._ray.is_initialized():
            self._ray.shutdown()

    def _check_same_code(self) -> None:
        """On one machine the actors must run this process's fedsim: Ray puts the current
        directory first on its workers' path, so a run started in another checkout than the
        one it imports would train with one code and evaluate with another."""
        here = package_directory()
        for there in self._wait([(i, a.package.remote()) for i, a in enumerate(self.actors)]):
            if there != here:
                raise RunError(
                    f"Ray's workers import fedsim from {there} (Ray puts the current directory "
                    f"first on their path), this process from {here}: run fedsim from "
                    f"{Path(here).parent}, or install the fedsim here (pip install -e .)"
                )

    def _wait(self, calls: list[tuple[int, Any]]) -> list[Any]:
        """The results of actor calls; a lost actor is one :class:`RunError` naming its shard."""
        errors = self._ray.exceptions
        # An actor killed, crashed, or stopped by Ray's memory monitor (other processes' memory
        # counts too); an exception raised by fedsim's code inside an actor is a bug, not these.
        lost = (errors.RayActorError, errors.OutOfMemoryError, errors.WorkerCrashedError)
        results = []
        for shard, future in calls:
            try:
                results.append(self._ray.get(future))
            except lost as error:
                reason = (str(error).strip() or type(error).__name__).splitlines()[0].rstrip(".")
                rows = self.shards[shard]
                raise RunError(
                    f"Ray actor of shard {shard} (rows {rows[0]}..{rows[-1]}, {len(rows)} rows) "
                    f"died: {reason}; the metrics written so far are kept, and "
                    "`fedsim resume RUN_DIR` continues from the last checkpoint"
                ) from None
        return results

    # --- plans ---------------------------------------------------------------------------

    def execute(self, plan: RoundPlan, round_idx: int) -> None:
        """Run the plan's steps in order, each on all shards at once."""
        if self.pooled:  # every shard: its rows the plan uses, releasing the others
            used = rows_used(plan)
            owners = self.owner[used]
            admit = [a.admit.remote(used[owners == i]) for i, a in enumerate(self.actors)]
            self._wait(list(enumerate(admit)))
        for index, step in enumerate(plan.steps):
            self.step_index = index  # keys the randomness of the step's messages
            self._execute(step, round_idx)

    def _execute(self, step: Step, round_idx: int) -> None:
        if isinstance(step, Train):
            calls = []
            for i, nodes in self._split(step.nodes):
                part = step.only(np.isin(step.nodes, nodes))
                calls.append((i, self.actors[i].train.remote(part.nodes, part, round_idx)))
            self._wait(calls)
        elif isinstance(step, Gossip):
            self._gossip(step, round_idx)
        elif isinstance(step, Average | Aggregate):
            self._averages(step.groups if isinstance(step, Aggregate) else (step,), round_idx)
        elif isinstance(step, Push):
            self._push(step, round_idx)
        elif isinstance(step, Merge):
            index = np.argsort(step.nodes)
            nodes, weights = step.nodes[index], step.self_weights[index]
            self._wait(
                [
                    (i, self.actors[i].merge.remote(part, weights[np.isin(nodes, part)]))
                    for i, part in self._split(nodes)
                ]
            )
        else:
            raise TypeError(f"unknown plan step {step!r}")

    def _split(self, rows: np.ndarray) -> list[tuple[int, np.ndarray]]:
        """``rows`` grouped by the shard that holds them (sorted within each shard)."""
        rows = np.asarray(rows, dtype=np.int64)
        owners = self.owner[rows]
        return [(i, np.sort(rows[owners == i])) for i in np.unique(owners)]

    def _fetch(self, rows: np.ndarray, slot: str = "params") -> list[Any]:
        """Object refs of ``rows``' parameters (or ``slot``), one per holding shard, in shard
        order."""
        self.bytes_between_actors += len(rows) * self.row_bytes
        return [self.actors[i].get.remote(part, slot) for i, part in self._split(rows)]

    def _sent(
        self,
        senders: np.ndarray,
        link: str,
        round_idx: int,
        reference: torch.Tensor | None = None,
        mixing: sp.csr_array | None = None,
        values: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """What the receivers get of the messages of the distinct global rows ``senders``
        over ``link``, rewritten here by the message transforms (of the update from
        ``reference`` where given, reading a gossip step's ``mixing`` weights where given)
        with the senders' states, gathered from their shards and written back to them.
        The messages are the senders' rows, or ``values`` (a compressed downlink's model,
        once per client, the clients standing in as senders)."""
        outgoing = Outgoing(
            senders,
            link,
            round_idx,
            self.task.seed,
            self.num_nodes,
            step=self.step_index,
            mixing=mixing,
        )
        names = self.messages.state_names(link)
        outgoing.slots = {name: self.rows(senders, held) for name, held in names}
        sent = self.rows(senders) if values is None else values
        received = self.messages.apply(sent, outgoing, reference)
        self._wait(
            [
                (i, self.actors[i].write.remote(part, state[positions], held))
                for name, held in names
                for state in [outgoing.slots[name].numpy()]
                for i, part in self._split(senders)
                for positions in [_positions(senders, part)]
            ]
        )
        self.bytes_between_actors += (1 + 2 * len(names)) * len(senders) * self.row_bytes
        return received

    def _gossip(self, step: Gossip, round_idx: int) -> None:
        """Each shard mixes its rows with the rows of other shards that its nodes receive;
        with message transforms, the received rows as rewritten here, its own as they are;
        with replicas, the senders' replicas as updated here (and written to their shards)."""
        weights = sp.csr_array(step.weights)
        senders = sent = None
        if step.payload != "params":
            check_plain_gossip(step, self.aggregator, self.messages)
        elif step.replicas or self.messages.on("d2d"):
            senders = np.unique(step.messages(weights.shape[0]).senders)
            reference = self.rows(senders, "replica") if step.replicas else None
            sent = self._sent(senders, "d2d", round_idx, reference, weights).numpy()
        if step.replicas:
            self._wait(
                [
                    (
                        i,
                        self.actors[i].write.remote(
                            part, sent[_positions(senders, part)], "replica"
                        ),
                    )
                    for i, part in self._split(senders)
                ]
            )
            self.bytes_between_actors += 2 * len(senders) * self.row_bytes
        calls = []
        for index, rows in enumerate(self.shards):
            rows = rows[rows < weights.shape[0]]
            if not len(rows):
                continue
            block = weights[rows]
            foreign = np.setdiff1d(np.unique(block.indices), rows)
            foreign = np.concatenate([part for _, part in self._split(foreign)] or [foreign])
            columns = np.concatenate([rows, foreign])
            position = np.full(weights.shape[1], -1, dtype=np.int64)
            position[columns] = np.arange(len(columns))
            local = sp.csr_array(
                (block.data, position[block.indices], block.indptr),
                shape=(len(rows), len(columns)),
            )
            if sent is None:
                calls.append((index, local, rows, self._fetch(foreign, step.payload), None))
                continue
            # Rows with no weight here (explicit zeros) send nothing: zeros stand in.
            received = np.zeros((len(foreign), sent.shape[1]), dtype=sent.dtype)
            found = np.isin(foreign, senders)
            received[found] = sent[np.searchsorted(senders, foreign[found])]
            own = senders[np.isin(senders, rows)]
            own_sent = None if step.replicas else (own, sent[np.searchsorted(senders, own)])
            self.bytes_between_actors += (len(foreign) + len(own)) * self.row_bytes
            calls.append((index, local, rows, [received], own_sent))
        self._wait(
            [
                (
                    i,
                    self.actors[i].gossip.remote(
                        local,
                        rows,
                        *refs,
                        sent=own_sent,
                        step_size=step.step_size,
                        replicas=step.replicas,
                        payload=step.payload,
                    ),
                )
                for i, local, rows, refs, own_sent in calls
            ]
        )

    def _averages(self, groups: tuple[Average, ...], round_idx: int) -> None:
        """Every group's average from the shards' partial sums (or here, from the models, for
        an aggregator that combines them or messages that the transforms rewrite), then
        written to its targets or, with a server update, moved towards by them."""
        averages = []
        for group in groups:
            combines = group.payload == "params" and len(group.sources) > 1
            link = group.link(self.num_nodes)
            if group.uploads_updates(self.num_nodes):
                averages.append(self._updates_here(group, round_idx))
                continue
            if group.payload == "params" and self.messages.on(link) and link == "downlink":
                model = one_each(group, self.rows(group.sources))
                received = self._sent(group.targets, link, round_idx, values=model.clone())
                averages.append(received.numpy())
                self._write_rows(group.targets, received.numpy(), DOWNLOADED)
                continue
            if group.payload == "params" and self.messages.on(link):
                reference = None
                if link == "uplink" and len(group.targets) == 1:  # updates from what they hold
                    reference = self.rows(group.targets)
                    if self.messages.on("downlink"):
                        reference = self.rows(group.sources, DOWNLOADED)
                sources = self._sent(group.sources, link, round_idx, reference)
                averages.append(self._combined_here(group, sources))
                continue
            if combines and self.aggregator.combines_rows:  # one combination per target
                self.bytes_between_actors += len(group.sources) * self.row_bytes
                averages.append(self._combined_here(group, self.rows(group.sources)))
                continue
            owners = self.owner[group.sources]
            parts = [
                (i, self.actors[i].partial_average.remote(
                    group.sources[owners == i], group.weights[owners == i], group.payload
                ))
                for i in np.unique(owners)
            ]  # fmt: skip
            weighted, variances = average_of(self._wait(parts))
            if combines and self.aggregator.corrects_on(link):
                merged, target = (
                    torch.from_numpy(rows.astype(np.float32))[None]
                    for rows in (weighted, variances / len(group.sources))
                )
                weighted = self._finish(merged, target)[0].numpy()
            self.bytes_between_actors += len(parts) * self.row_bytes
            averages.append(weighted.astype(np.float32))
        calls = []
        for group, average in zip(groups, averages, strict=True):
            slot = group.written
            if group.update is None and average.ndim == 1:
                calls += [
                    (i, self.actors[i].write.remote(part, average, slot))
                    for i, part in self._split(group.targets)
                ]
                continue
            targets = np.asarray(group.targets)
            moved = average  # one row per target
            if group.update is not None:
                moved = server_step(
                    group.update,
                    self.rows(targets, slot),
                    torch.from_numpy(average),
                    self.server_states,
                    slot,
                ).numpy()
                self.bytes_between_actors += 2 * len(targets) * self.row_bytes
            calls += [
                (i, self.actors[i].write.remote(part, moved[_positions(targets, part)], slot))
                for i, part in self._split(targets)
            ]
        for group, average in zip(groups, averages, strict=True):
            if group.base is not None and not group.uploads_updates(self.num_nodes):
                targets = np.asarray(group.targets)
                calls += [  # what each client starts from (its own, from a compressed downlink)
                    (i, self.actors[i].write.remote(part, rows, group.base))
                    for i, part in self._split(targets)
                    for rows in [_own_rows(average, targets, part)]
                ]
        self._wait(calls)

    def _write_rows(self, targets: np.ndarray, rows: np.ndarray, slot: str) -> None:
        """Write ``rows`` (one per target) into the targets' ``slot`` on their shards."""
        targets = np.asarray(targets)
        self.bytes_between_actors += len(targets) * self.row_bytes
        self._wait(
            [
                (i, self.actors[i].write.remote(part, rows[_positions(targets, part)], slot))
                for i, part in self._split(targets)
            ]
        )

    def _updates_here(self, group: Average, round_idx: int) -> np.ndarray:
        """An upload of updates from the sources' ``base`` rows (fedsim.plans.Average),
        computed here as the local backend computes it."""
        own, bases = self.rows(group.targets), self.rows(group.sources, group.base)
        self.bytes_between_actors += (len(own) + 2 * len(group.sources)) * self.row_bytes
        link = group.link(self.num_nodes)
        if self.messages.on(link):
            sources = self._sent(group.sources, link, round_idx, bases)
        else:
            sources = self.rows(group.sources)
        group, models, total = rebased(group, own, sources - bases)
        if not len(group.sources):
            return own[0].numpy()
        return own[0].numpy() + total * (self._combined_here(group, models) - own[0].numpy())

    def _combined_here(self, group: Average, sources: torch.Tensor) -> np.ndarray:
        """The group's average of the model rows ``sources``, computed here by the local
        backend's row kernel (:func:`fedsim.backends.base.combined_average`)."""

        def own() -> torch.Tensor:
            self.bytes_between_actors += len(group.targets) * self.row_bytes
            return self.rows(group.targets)

        layout = self.task.layout
        average = combined_average(
            group, sources, own, self.aggregator, layout, self.num_nodes, self._finish
        )
        return average.numpy()

    def _finish(self, merged: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Apply the aggregator's correction and tally its factors for the metrics."""
        corrected, factors = self.aggregator.finish(merged, target, self.task.layout)
        self.factor_sum += factors.sum(dim=0).double().numpy()
        self.factor_count += len(factors)
        return corrected

    def _push(self, step: Push, round_idx: int) -> None:
        """Each shard buffers the models pushed to its nodes, fetched from their senders
        (or, with message transforms, as rewritten here)."""
        calls = []
        if self.messages.on("d2d"):
            senders = np.unique(step.sources)
            sent = self._sent(senders, "d2d", round_idx).numpy()
            for index, _ in self._split(step.targets):
                mine = np.flatnonzero(self.owner[step.targets] == index)
                rows = sent[np.searchsorted(senders, step.sources[mine])]
                self.bytes_between_actors += len(mine) * self.row_bytes
                push = self.actors[index].push.remote(step.targets[mine], step.weights[mine], rows)
                calls.append((index, push))
            self._wait(calls)
            return
        for index, _ in self._split(step.targets):
            mine = np.flatnonzero(self.owner[step.targets] == index)
            mine = mine[np.argsort(self.owner[step.sources[mine]], kind="stable")]
            senders = step.sources[mine]
            owners = self.owner[senders]
            refs = [self.actors[i].get.remote(senders[owners == i]) for i in np.unique(owners)]
            self.bytes_between_actors += int((owners != index).sum()) * self.row_bytes
            push = self.actors[index].push.remote(step.targets[mine], step.weights[mine], *refs)
            calls.append((index, push))
        self._wait(calls)

    def keep(self, nodes: np.ndarray | None) -> None:
        """The nodes whose rows the strategy keeps (rows on demand: each shard its own)."""
        if self.pooled:
            self._wait([(i, a.keep.remote(nodes)) for i, a in enumerate(self.actors)])

    def held_nodes(self) -> np.ndarray | None:
        """The nodes that have rows now, on any shard (None: every node)."""
        if not self.pooled:
            return None
        parts = self._wait([(i, a.held_nodes.remote()) for i, a in enumerate(self.actors)])
        return np.sort(np.concatenate(parts))

    def _nodes(self, num_nodes: int, nodes: np.ndarray | None) -> np.ndarray:
        """``nodes``, or every node; with rows on demand, of those the nodes held."""
        held = self.held_nodes()
        if held is None:
            return np.arange(num_nodes) if nodes is None else nodes
        return held if nodes is None else np.intersect1d(nodes, held)

    # --- reading rows --------------------------------------------------------------------

    def rows(self, rows: np.ndarray | slice, slot: str = "params") -> torch.Tensor:
        """A copy of the given rows (of ``slot``, gathered from their shards), in the order
        asked."""
        if isinstance(rows, slice):
            rows = np.arange(*rows.indices(self.num_rows))
        rows = np.asarray(rows)
        owners = self.owner[rows]
        calls = [(i, self.actors[i].get.remote(rows[owners == i], slot)) for i in np.unique(owners)]
        result = np.empty((len(rows), self.task.layout.size), dtype=np.float32)
        for (shard, _), part in zip(calls, self._wait(calls), strict=True):
            result[owners == shard] = part
        return torch.from_numpy(result)

    def node_mean(self, num_nodes: int, nodes: np.ndarray | None = None) -> torch.Tensor:
        """The average of the node rows, or of ``nodes``' rows."""
        nodes = self._nodes(num_nodes, nodes)
        return torch.from_numpy(self._mean_offset(nodes, None))

    def _mean_offset(self, nodes: np.ndarray, shift: np.ndarray | None) -> np.ndarray:
        """The average of ``nodes``' rows less ``shift``, from the shards' sums."""
        parts = self._wait(
            [(i, self.actors[i].sums.remote(part, shift)) for i, part in self._split(nodes)]
        )
        return sum(total for total, _ in parts) / len(nodes)

    def all_finite(self) -> bool:
        """Whether every parameter of every shard is finite."""
        return all(self._wait([(i, a.all_finite.remote()) for i, a in enumerate(self.actors)]))

    def consensus_distance(self, num_nodes: int, nodes: np.ndarray | None = None) -> float:
        """Mean squared distance of the node models (or ``nodes``' models) to their average.

        The average is taken about the first one's model, so that equal models give exactly 0.
        """
        nodes = self._nodes(num_nodes, nodes)
        reference = self.rows(nodes[:1])[0].numpy()
        mean = reference + self._mean_offset(nodes, reference)
        parts = self._wait(
            [
                (i, self.actors[i].squared_distance.remote(part, mean))
                for i, part in self._split(nodes)
            ]
        )
        return float(sum(parts) / len(nodes))

    def correction_factors(self) -> dict[str, float]:
        """Mean correction factor per corrected tensor since the last call (then reset)."""
        parts = self._wait([(i, a.correction_factors.remote()) for i, a in enumerate(self.actors)])
        total = self.factor_sum + sum(part for part, _ in parts)
        count = self.factor_count + sum(count for _, count in parts)
        self.factor_sum[:] = 0
        self.factor_count = 0
        if not count:
            return {}
        names = [name for name, _ in self.aggregator.tensors(self.task.layout)]
        return dict(zip(names, (total / count).tolist(), strict=True))

    def counters(self) -> dict[str, float]:
        """The bytes of rows that crossed between actors (the simulator's own traffic)."""
        return {"bytes_between_actors_total": float(self.bytes_between_actors)}

    def state(self) -> dict[str, Any]:
        """The whole federation's rows, gathered from the shards, and this backend's counters:
        the bytes between actors, the correction factors not yet reported (here and per
        shard, so that a resumed run sums them in the same order).  Plain data only."""
        states = self._wait([(i, a.state.remote()) for i, a in enumerate(self.actors)])
        merged: dict[str, Any] = {
            "bytes_between_actors": float(self.bytes_between_actors),
            "server_states": {
                name: {key: value.clone() for key, value in state.items()}
                for name, state in self.server_states.items()
            },
            "factor_sum": self.factor_sum.copy(),
            "factor_count": int(self.factor_count),
            "shard_factor_sums": [state["factor_sum"] for state in states],
            "shard_factor_counts": [int(state["factor_count"]) for state in states],
        }
        if self.pooled:
            merged["local_steps"] = self._gather([state["local_steps"] for state in states])
            return {**merged, **self._pooled_state(states)}
        for key in ("params", "local_steps"):
            merged[key] = self._gather([state[key] for state in states])
        merged["optimizer"] = self._gather_named([state["optimizer"] for state in states])
        buffers = [state["buffer"] for state in states]
        merged["buffer"] = (
            self._gather_named(buffers) if any(part is not None for part in buffers) else None
        )
        merged["slots"] = self._gather_named([state["slots"] for state in states])
        return merged

    def _pooled_state(self, states: list[dict[str, Any]]) -> dict[str, Any]:
        """The shards' held rows as the local backend holds rows on demand (so either backend
        resumes from it): the held nodes, sorted, in slots 0, 1, ..., then the servers."""
        nodes, servers, node_slots, server_slots, kept = [], [], [], [], []
        for rows, state in zip(self.shards, states, strict=True):
            pool, node_rows = state["pool"], int(np.count_nonzero(rows < self.num_nodes))
            nodes.append(rows[pool["nodes"]])
            kept.append(rows[pool["kept"]])
            servers.append(rows[node_rows:])
            node_slots.append(torch.tensor(pool["slots"]))  # a copy: Ray's arrays are read-only
            server_slots.append(pool["capacity"] + torch.arange(len(rows) - node_rows))
        by_node = torch.as_tensor(np.argsort(np.concatenate(nodes)))
        by_server = torch.as_tensor(np.argsort(np.concatenate(servers)))

        def gather(parts: list[torch.Tensor]) -> torch.Tensor:
            held = torch.cat([part[at] for part, at in zip(parts, node_slots, strict=True)])
            serving = torch.cat([part[at] for part, at in zip(parts, server_slots, strict=True)])
            return torch.cat([held[by_node], serving[by_server]])

        def gather_named(key: str) -> dict[str, torch.Tensor] | None:
            parts = [state[key] or {} for state in states]
            shapes = {name: value.shape[1:] for part in parts for name, value in part.items()}
            if key == "buffer" and not shapes:
                return None
            return {
                name: gather(
                    [
                        part.get(name, torch.zeros(len(state["params"]), *shape))
                        for part, state in zip(parts, states, strict=True)
                    ]
                )
                for name, shape in shapes.items()
            }

        held = len(by_node)
        return {
            "params": gather([state["params"] for state in states]),
            "optimizer": gather_named("optimizer"),
            "buffer": gather_named("buffer"),
            "slots": gather_named("slots"),
            "pool": {
                "nodes": np.sort(np.concatenate(nodes)),
                "slots": np.arange(held),
                "kept": np.sort(np.concatenate(kept)),
                "capacity": held,
            },
        }

    def _pooled_part(
        self, pool: dict[str, Any], index: int, rows: np.ndarray
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        """Shard ``index``'s part of a saved state with rows on demand (:meth:`_pooled_state`):
        where its held nodes' and servers' rows lie there, and its own pool."""
        nodes, kept = np.asarray(pool["nodes"]), np.asarray(pool["kept"])
        mine = self.owner[nodes] == index
        servers = rows[rows >= self.num_nodes]
        physical = np.concatenate(
            [np.asarray(pool["slots"])[mine], pool["capacity"] + servers - self.num_nodes]
        )
        held = int(mine.sum())
        own = {
            "nodes": np.searchsorted(rows, nodes[mine]),
            "slots": np.arange(held),
            "kept": np.searchsorted(rows, kept[self.owner[kept] == index]),
            "capacity": held,
        }
        return torch.as_tensor(physical), own

    def _gather_named(self, parts: list[dict[str, torch.Tensor] | None]) -> dict[str, Any]:
        """Named tensors gathered from the shards, zero where a shard has none of a name."""
        shapes = {name: value.shape[1:] for part in parts if part for name, value in part.items()}
        return {
            name: self._gather(
                [
                    part[name] if part and name in part else torch.zeros(len(rows), *shape)
                    for rows, part in zip(self.shards, parts, strict=True)
                ]
            )
            for name, shape in shapes.items()
        }

    def _gather(self, parts: list[torch.Tensor | None]) -> torch.Tensor | None:
        if parts[0] is None:
            return None
        whole = torch.empty(self.num_rows, *parts[0].shape[1:], dtype=parts[0].dtype)
        for rows, part in zip(self.shards, parts, strict=True):
            whole[torch.as_tensor(rows)] = part
        return whole

    def restore(self, state: dict[str, Any]) -> None:
        """Give each shard its rows of a :meth:`state`, and take back the counters."""
        self.bytes_between_actors = float(state["bytes_between_actors"])
        self.server_states = {
            name: {key: value.clone() for key, value in saved.items()}
            for name, saved in state.get("server_states", {}).items()
        }
        self.factor_sum = np.array(state["factor_sum"], dtype=np.float64)
        self.factor_count = int(state["factor_count"])
        sums, counts = state["shard_factor_sums"], state["shard_factor_counts"]
        if len(sums) != len(self.shards):  # saved with other shards: their sums count here
            self.factor_sum += sum(sums, np.zeros_like(self.factor_sum))
            self.factor_count += sum(counts)
            sums = [np.zeros_like(self.factor_sum)] * len(self.shards)
            counts = [0] * len(self.shards)
        optimizer, local_steps = state.get("optimizer"), state.get("local_steps")
        if optimizer is None:  # saved before optimizer states were named
            momentum = state.get("momentum")
            optimizer = {} if momentum is None else {"momentum": momentum}
        calls = []
        for index, rows in enumerate(self.shards):
            index_rows, pool = torch.as_tensor(rows), None
            at = index_rows  # where the shard's rows lie in the saved tensors
            if state.get("pool") is not None:
                at, pool = self._pooled_part(state["pool"], index, rows)
            part = {
                "params": state["params"][at],
                "optimizer": {name: value[at] for name, value in optimizer.items()},
                "local_steps": None if local_steps is None else local_steps[index_rows],
                "buffer": None
                if state["buffer"] is None
                else {name: value[at] for name, value in state["buffer"].items()},
                "slots": {name: value[at] for name, value in state.get("slots", {}).items()},
                "factor_sum": sums[index],
                "factor_count": counts[index],
                "pool": pool,
            }
            calls.append((index, self.actors[index].restore.remote(part)))
        self._wait(calls)


def _positions(rows: np.ndarray, chosen: np.ndarray) -> np.ndarray:
    """Where each of ``chosen`` stands in ``rows`` (distinct row ids)."""
    order = np.argsort(rows)
    return order[np.searchsorted(rows[order], chosen)]


def _order(num_rows: int, topology: Topology | None) -> np.ndarray:
    """Rows in an order that keeps graph neighbours close (servers last)."""
    if topology is None:
        return np.arange(num_rows)
    graph = topology.graph(0)
    ordering = nx.utils.reverse_cuthill_mckee_ordering(nx.Graph(graph))
    nodes = np.array(list(ordering), dtype=np.int64)
    return np.concatenate([nodes, np.arange(graph.number_of_nodes(), num_rows)])


def _local_gpus() -> int:
    """CUDA devices of this machine (what a local Ray offers its actors)."""
    return torch.cuda.device_count()


def _own_rows(average: np.ndarray, targets: np.ndarray, part: np.ndarray) -> np.ndarray:
    """What the targets in ``part`` receive: the one average, or each its own row."""
    return average if average.ndim == 1 else average[_positions(targets, part)]
