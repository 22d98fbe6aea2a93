"""The local backend: the whole federation as one (rows, d) tensor in this process."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from fedsim.aggregators import Aggregator, Mean
from fedsim.backends.base import combined_average, one_each, rebased
from fedsim.backends.pool import RowPool, check_rows_setting, resized, rows_used
from fedsim.errors import check
from fedsim.messages import DOWNLOADED, MessageTransforms, Outgoing
from fedsim.plans import Aggregate, Average, Gossip, Merge, Push, RoundPlan, Step, Train
from fedsim.server_optimizers import server_step
from fedsim.task import Task
from fedsim.training.loop import LoopTrainer
from fedsim.training.schedule import local_batches
from fedsim.training.transforms import Rewrite, slot_names
from fedsim.training.vectorised import VectorisedTrainer

if TYPE_CHECKING:
    import scipy.sparse as sp

    from fedsim.topology.base import Topology

MIXING_CACHE = 64  # mixing matrices kept on the device (more than any period in use)
FINITE_CHUNK = 1 << 22  # values checked for inf and nan at a time (4 MiB of flags)


CHUNK_BYTES = 32 * 2**20
"""The parameter rows of a default chunk (``backend.chunk_size=null``): 872 nodes of the
digits MLP, 12,905 of logistic regression.  A D-PSGD round of 10,000 MLP nodes took 0.74 s
in chunks of 256 (per-call overhead), 0.55 s in these, 0.60 s in chunks of twice this size
(tensors above glibc's 32 MiB mmap threshold are page-faulted in afresh each time)."""


def chunk_rows(chunk_size: int | str | None, num_parameters: int) -> int | str:
    """``backend.chunk_size`` in nodes (or ``auto``): null is as many nodes as
    :data:`CHUNK_BYTES` of float32 parameter rows hold."""
    if chunk_size is None:
        return max(1, CHUNK_BYTES // (4 * num_parameters))
    return chunk_size


def check_training_settings(chunk_size: int | str | None, vectorise: bool | str) -> None:
    """``backend.chunk_size`` and ``backend.vectorise`` must be legal (any backend)."""
    check(
        chunk_size in (None, "auto") or (isinstance(chunk_size, int) and chunk_size >= 1),
        f"backend.chunk_size={chunk_size!r} must be an integer >= 1, null or auto",
    )
    check(
        vectorise in (True, False, "auto"),
        f"backend.vectorise={vectorise!r} is not one of: auto, true, false",
    )


def check_plain_gossip(step: Gossip, aggregator: Aggregator, messages: MessageTransforms) -> None:
    """Refuse a gossip of a per-row state beside an aggregator that combines models itself
    or message transforms between nodes: the state would escape them, silently."""
    check(
        not aggregator.combines_rows and not messages.on("d2d"),
        f"a gossip of {step.payload!r} is mixed by plain W, out of reach of the aggregator and "
        "the message transforms (they act on models): use aggregator=mean and no attack or "
        "compressor between nodes with this strategy",
    )


class LocalBackend:
    """Executes round plans on stacked parameters ``params`` of shape (nodes + servers, d).

    Parameters
    ----------
    chunk_size:
        Nodes trained together in one vectorised call; bounds memory.  None: as many as
        :data:`CHUNK_BYTES` of parameter rows hold; ``"auto"``: the most that fit in memory.
    vectorise:
        ``"auto"`` (vmap unless the model is convolutional on CPU), ``True`` or ``False``
        (the plain per-node loop).
    rows:
        ``"all"`` (a row for every node) or ``"on_demand"``: for a strategy whose clients
        hold nothing between rounds (``Strategy.held_nodes``), only the rows a round uses
        and the ones the strategy keeps (:class:`~fedsim.backends.pool.RowPool`); plans
        still name global rows.
    """

    def __init__(
        self,
        chunk_size: int | str | None = None,
        vectorise: bool | str = "auto",
        rows: str = "all",
    ) -> None:
        check_training_settings(chunk_size, vectorise)
        check_rows_setting(rows)
        self.chunk_size, self.vectorise, self.row_layout = chunk_size, vectorise, rows

    def start(
        self,
        task: Task,
        num_rows: int,
        aggregator: Aggregator | None = None,
        topology: Topology | None = None,
        messages: MessageTransforms | None = None,
        held: np.ndarray | None = None,
        row_ids: np.ndarray | None = None,
    ) -> None:
        """Give every row the task's initial model and set up the trainer; ``aggregator``
        combines what a row receives (the plain mean by default), ``messages`` rewrite what
        the rows send.  The topology matters only to backends that shard the rows.
        ``held``: the nodes the strategy holds before its first round, None where every
        node keeps its row (then all rows exist, whatever ``rows`` says).  ``row_ids``: the
        global ids of the rows, when they are a shard's."""
        self.task = task
        self.aggregator = aggregator or Mean()
        self.messages = messages or MessageTransforms()
        self.num_nodes = len(task.node_data.num_examples)  # rows from here on are servers
        self.step_index = 0  # the position of the step being executed in its round's plan
        self.corrected = self.aggregator.tensors(task.layout)
        self.factor_sum = torch.zeros(len(self.corrected), dtype=torch.float64)
        self.factor_count = 0
        self.buffer: dict[str, torch.Tensor] | None = None
        self.server_states: dict[str, dict[str, torch.Tensor]] = {}
        self.slots: dict[str, torch.Tensor] = {}  # per-row states beside the parameters
        self.row_ids = None if row_ids is None else np.asarray(row_ids)  # None: row i is row i
        self.node_ids: torch.Tensor | None = (  # global node of each row, when a shard
            None if row_ids is None else torch.as_tensor(row_ids, device=task.device)
        )
        self.num_rows = num_rows
        node_rows = (
            min(self.num_nodes, num_rows)
            if self.row_ids is None
            else int(np.count_nonzero(self.row_ids < self.num_nodes))
        )
        self.pool = (
            RowPool(node_rows, num_rows - node_rows)
            if self.row_layout == "on_demand" and held is not None
            else None
        )
        first = 0 if self.pool is None else node_rows
        self.params = task.initial_models(self._global(np.arange(first, num_rows)))
        self.optimizer_state = task.optimizer.init(self.params)  # per-row, beside params
        # Each row's local steps since the run began, for a schedule by local step.
        self.local_steps = (
            torch.zeros(num_rows, dtype=torch.int64, device=self.params.device)
            if task.lr_schedule.by == "local_step"
            else None
        )
        vectorise = task.prefers_vectorised() if self.vectorise == "auto" else self.vectorise
        self.trainer = (
            self._trainer(task)
            if vectorise
            else LoopTrainer(task.model, task.layout, task.optimizer)
        )
        self._mixing: dict[int, tuple[sp.csr_array, torch.Tensor]] = {}
        self._spare: torch.Tensor | None = None  # a (rows, d) buffer for W @ X
        self._gathered: torch.Tensor | None = None  # a (chunk, d) buffer for trained rows

    @property
    def momentum(self) -> torch.Tensor | None:
        """SGD's per-row momentum buffers, if the optimizer keeps them."""
        return self.optimizer_state.get("momentum")

    def _trainer(self, task: Task) -> VectorisedTrainer | LoopTrainer:
        """The vectorised trainer, or the loop with a warning if vmap cannot run this model."""
        trainer = VectorisedTrainer(task.model, task.layout, task.optimizer)
        x, y = task.dataset.train_x[:1], task.dataset.train_y[:1]
        try:
            row = self.params[:1] if len(self.params) else task.initial_models(np.zeros(1, int))
            trainer.gradients(row, x[None], y[None], torch.ones(1, 1, device=x.device))
        except RuntimeError as error:
            warnings.warn(
                f"the model cannot be trained under vmap ({str(error).splitlines()[0]}); "
                "fedsim trains its nodes one by one instead (backend.vectorise=false)",
                stacklevel=2,
            )
            return LoopTrainer(task.model, task.layout, task.optimizer)
        return trainer

    def execute(self, plan: RoundPlan, round_idx: int) -> None:
        """Run the plan's steps in order."""
        if self.pool is not None:
            self.admit(rows_used(plan))
        for index, step in enumerate(plan.steps):
            self.step_index = index  # keys the randomness of the step's messages
            self._execute(step, round_idx)

    def _execute(self, step: Step, round_idx: int) -> None:
        if isinstance(step, Train):
            self.train(step, round_idx)
        elif isinstance(step, Gossip):
            self._gossip(step, round_idx)
        elif isinstance(step, Average | Aggregate):
            groups = step.groups if isinstance(step, Aggregate) else (step,)
            averages = [self._average(group, round_idx) for group in groups]
            for group, average in zip(groups, averages, strict=True):
                self._write(group, average)
        elif isinstance(step, Push):
            self._push(step, round_idx)
        elif isinstance(step, Merge):
            self.merge(step)
        else:
            raise TypeError(f"unknown plan step {step!r}")

    def _average(self, step: Average, round_idx: int) -> torch.Tensor:
        """The weighted average of the sources, finished by the aggregator when it averages
        several received models (a broadcast of one model is not an average); or, with an
        aggregator that combines the models themselves, what it makes of them.  The models
        arrive as the message transforms make them, uploads as updates of the one server's
        model that the clients downloaded, or of each one's ``base`` where the step has one."""
        sources = self.slot(step.payload)[self.where(step.sources)]
        link = step.link(self.num_nodes)
        if step.uploads_updates(self.num_nodes):
            own = self.params[self.where(step.targets)]
            bases = self.slot(step.base)[self.where(step.sources)]
            if self.messages:
                sources = self.sent(sources, step.sources, link, round_idx, bases)
            step, models, total = rebased(step, own, sources - bases)
            if not len(step.sources):
                return own[0]
            return own[0] + total * (self._combined(step, models) - own[0])
        if step.payload == "params" and self.messages.on(link) and link == "downlink":
            received = self.sent(one_each(step, sources), step.targets, link, round_idx)
            self.slot(DOWNLOADED)[self.where(step.targets)] = received
            return received
        if step.payload == "params" and self.messages:
            reference = None
            if link == "uplink" and len(step.targets) == 1:  # an update from what they hold
                reference = self.params[self.where(step.targets)]
                if self.messages.on("downlink"):
                    reference = self.slot(DOWNLOADED)[self.where(step.sources)]
            sources = self.sent(sources, step.sources, link, round_idx, reference)
        return self._combined(step, sources)

    def _combined(self, step: Average, sources: torch.Tensor) -> torch.Tensor:
        """The step's average of the received rows ``sources``, finished or combined by the
        aggregator where it averages several models."""

        def own() -> torch.Tensor:
            return self.params[self.where(step.targets)]

        layout, num_nodes, finish = self.task.layout, self.num_nodes, self._finish
        return combined_average(step, sources, own, self.aggregator, layout, num_nodes, finish)

    def weighted_sum(self, weights: np.ndarray, rows: torch.Tensor) -> torch.Tensor:
        """``sum_k weights[k] rows[k]``."""
        return self._tensor(weights) @ rows

    def _write(self, step: Average, average: torch.Tensor) -> None:
        """The targets become the average, or move towards it by the step's server update."""
        targets, rows = self.where(step.targets), self.slot(step.written)
        if step.update is not None:
            average = server_step(
                step.update, rows[targets], average, self.server_states, step.written
            )
        rows[targets] = average
        if step.base is not None and not step.uploads_updates(self.num_nodes):
            self.slot(step.base)[targets] = average  # what each client starts from

    def slot(self, name: str) -> torch.Tensor:
        """The (rows, d) tensor of ``name``: the parameters, or a per-row state that a plan
        or a transform uses (zero until first written)."""
        if name == "params":
            return self.params
        if name not in self.slots:
            self.slots[name] = torch.zeros_like(self.params)
        return self.slots[name]

    def sent(
        self,
        rows: torch.Tensor,
        senders: np.ndarray,
        link: str,
        round_idx: int,
        reference: torch.Tensor | None = None,
        mixing: sp.csr_array | None = None,
    ) -> torch.Tensor:
        """What the receivers get of the messages ``rows`` of global rows ``senders`` over
        ``link``: the message transforms' rewrite (of the update from ``reference``, what the
        receivers hold, where given), with their per-row states; ``mixing``: a gossip step's
        weights, which the transforms may read."""
        outgoing = Outgoing(
            senders,
            link,
            round_idx,
            self.task.seed,
            self.num_nodes,
            step=self.step_index,
            mixing=mixing,
        )
        states = {held: self.slot(held) for _, held in self.messages.state_names(link)}
        return self.messages.apply(rows, outgoing, reference, states)

    def _gossip(self, step: Gossip, round_idx: int) -> None:
        num_nodes = step.weights.shape[0]
        if step.payload != "params":  # a per-row state: plain W, as it is sent
            check_plain_gossip(step, self.aggregator, self.messages)
            rows = self.slot(step.payload)
            rows[:num_nodes] = self.mix(step.weights, rows[:num_nodes], num_nodes, plain=True)
            return
        own, sent = self.params[:num_nodes], None
        if step.replicas or self.messages:
            senders = np.unique(step.messages(num_nodes).senders)
            index = self._index(senders)
        if step.replicas:  # what every holder of a sender's replica now holds
            sent = self.slot("replica")[:num_nodes]
            sent[index] = self.sent(
                own[index], senders, "d2d", round_idx, sent[index], step.weights
            )
        elif self.messages:
            sent = own.clone()
            sent[index] = self.sent(own[index], senders, "d2d", round_idx, mixing=step.weights)
        self._set_params(self.mix(step.weights, own, num_nodes, sent, step.step_size))

    def _product(self, weights: sp.csr_array, stacked: torch.Tensor) -> torch.Tensor:
        """``W @ stacked``, written into the spare (rows, d) buffer where it fits: a fresh
        result of that size would cost as much in page faults as the product itself."""
        matrix = self._sparse(weights)
        if self._spare is None or self._spare.shape != self.params.shape:
            self._spare = torch.empty_like(self.params)
        spare = self._spare
        fits = weights.shape[0] <= len(spare) and spare.shape[1:] == stacked.shape[1:]
        if not fits or spare.data_ptr() == stacked.data_ptr():  # or it holds the rows mixed
            return torch.mm(matrix, stacked)
        out = spare[: weights.shape[0]]
        return torch.addmm(out, matrix, stacked, beta=0, out=out)

    def _set_params(self, mixed: torch.Tensor) -> None:
        """The first ``len(mixed)`` rows become ``mixed``; the spare buffer and the parameters
        trade places when the spare holds every row of the result."""
        spare = self._spare
        if (
            spare is not None
            and mixed.data_ptr() == spare.data_ptr()
            and mixed.shape == self.params.shape
        ):
            self.params, self._spare = spare, self.params
        else:
            self.params[: len(mixed)] = mixed

    def mix(
        self,
        weights: sp.csr_array,
        stacked: torch.Tensor,
        num_rows: int,
        sent: torch.Tensor | None = None,
        step_size: float | None = None,
        plain: bool = False,
    ) -> torch.Tensor:
        """``W @ stacked`` for ``num_rows`` rows, where row i of W has its own model in column i;
        the aggregator finishes every row that received models, with the mean variance of
        the models it received as the target.  An aggregator that combines the models
        themselves gets each row's received models with its own (:meth:`combine_received`).
        With ``sent`` (what the rows' messages became on the way) a row receives those and
        keeps its own model as it is.  With a ``step_size`` gamma a row moves by
        ``gamma (W S - S)`` instead, S the rows as sent (the plain mean only).  ``plain``:
        just ``W @ stacked``, no aggregator (a per-row state, not models)."""
        if plain:
            return self._product(weights, stacked)
        if step_size is not None:
            check(
                not (self.aggregator.combines_rows or self.aggregator.corrects),
                "a gossip step that moves by a step size takes the plain mean of what it "
                "receives; use aggregator=mean",
            )
            received = stacked if sent is None else sent
            change = self._product(weights, received) - received[:num_rows]
            return stacked[:num_rows] + step_size * change
        if self.aggregator.combines_rows:
            return self.combine_received(weights, stacked, num_rows, sent)
        if sent is None:
            mixed = self._product(weights, stacked)
        else:
            own = self._tensor(weights.diagonal())[:, None]
            mixed = self._product(weights, sent)
            kept = stacked[:num_rows] - sent[:num_rows]  # what it keeps of its own model
            mixed += kept.mul_(own)  # in place: one temporary (k, d) block, not two
            stacked = sent  # the received models, for the corrected aggregator below
        if self.aggregator.corrects:
            coo = weights.tocoo()
            received = (coo.row != coo.col) & (coo.data != 0)
            rows, columns = coo.row[received], coo.col[received]
            receivers = np.unique(rows)
            variances = self.aggregator.variances(stacked, self.task.layout)
            target = variances.new_zeros(num_rows, variances.shape[1])
            target.index_add_(0, self._index(rows), variances[self._index(columns)])
            counts = self._tensor(np.bincount(rows, minlength=num_rows)[receivers])
            index = self._index(receivers)
            mixed[index] = self._finish(mixed[index], target[index] / counts[:, None])
        return mixed

    def combine_received(
        self,
        weights: sp.csr_array,
        stacked: torch.Tensor,
        num_rows: int,
        sent: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Each row i's aggregate of the models j with W[i, j] != 0 (its own among them),
        computed for all rows that receive the same number of models at once; the received
        ones as ``sent`` has them, where given."""
        import scipy.sparse as sp  # imported by the strategy that made the weights

        weights = sp.csr_array(weights, copy=True)  # a copy: Ray's arrays are read-only
        weights.eliminate_zeros()
        weights.sort_indices()
        counts = np.diff(weights.indptr)
        combined = stacked[:num_rows].clone()
        for count in np.unique(counts[counts > 1]):
            rows = np.flatnonzero(counts == count)
            entries = weights.indptr[rows][:, None] + np.arange(count)
            columns = weights.indices[entries]
            received = stacked[self._index(columns)]
            if sent is not None:
                others = self._index(np.flatnonzero(columns != rows[:, None]))
                received.view(-1, received.shape[-1])[others] = sent[
                    self._index(columns.reshape(-1))[others]
                ]
            combined[self._index(rows)] = self.aggregator.combine(
                received, self._tensor(weights.data[entries]), stacked[self._index(rows)]
            )
        return combined

    def _push(self, step: Push, round_idx: int) -> None:
        sent = self.params[self.where(step.sources)]
        if self.messages:
            sent = self.sent(sent, step.sources, "d2d", round_idx)
        self.buffer_rows(sent, step.targets, step.weights)

    def buffer_rows(self, sent: torch.Tensor, targets: np.ndarray, weights: np.ndarray) -> None:
        """Add each sent row, weighted, to its target's buffer (with its tensors' variances).
        ``sent`` is weighted in place: its callers pass a block of their own (a fresh
        (messages, d) block cost its page faults)."""
        if self.buffer is None:
            num_rows = len(self.params)
            self.buffer = {
                "sum": torch.zeros_like(self.params),
                "weight": self.params.new_zeros(num_rows),
                "variance": self.params.new_zeros(num_rows, len(self.corrected)),
            }
        weights, targets = self._tensor(weights), self.where(targets)
        if self.aggregator.corrects:
            variances = self.aggregator.variances(sent, self.task.layout)
            self.buffer["variance"].index_add_(0, targets, variances * weights[:, None])
        self.buffer["sum"].index_add_(0, targets, sent.mul_(weights[:, None]))
        self.buffer["weight"].index_add_(0, targets, weights)

    def merge(self, step: Merge) -> None:
        check(
            not self.aggregator.combines_rows,
            "a Merge step keeps only the weighted sum of what a node received, which an "
            "aggregator that combines the models themselves cannot use",
        )
        nodes, buffer = self.where(step.nodes), self.buffer
        check(
            buffer is not None and bool((buffer["weight"][nodes] > 0).all()),
            "a Merge step names a node whose buffer is empty",
        )
        weight = buffer["weight"][nodes][:, None]
        own = self._tensor(step.self_weights)[:, None]
        # own x + (1 - own) sum / weight, in place on two gathered blocks: each fresh
        # (merging, d) block cost its page faults (1,000 MLP rows: 38 MB).
        received = buffer["sum"][nodes].mul_(1 - own).div_(weight)
        merged = self.params[nodes].mul_(own).add_(received)
        del received
        if self.aggregator.corrects:
            merged = self._finish(merged, buffer["variance"][nodes] / weight)
        self.params[nodes] = merged
        for part in buffer.values():
            part[nodes] = 0

    def _finish(self, merged: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Apply the aggregator's correction and tally its factors for the metrics."""
        corrected, factors = self.aggregator.finish(merged, target, self.task.layout)
        self.factor_sum += factors.sum(dim=0).double().cpu()
        self.factor_count += len(factors)
        return corrected

    def correction_sums(self) -> tuple[np.ndarray, int]:
        """The correction factors summed per corrected tensor since the last call, and how
        many were summed (then both reset)."""
        sums, count = self.factor_sum.numpy().copy(), self.factor_count
        self.factor_sum.zero_()
        self.factor_count = 0
        return sums, count

    def correction_factors(self) -> dict[str, float]:
        """Mean correction factor per corrected tensor since the last call (then reset)."""
        sums, count = self.correction_sums()
        if not count:
            return {}
        return {name: s / count for (name, _), s in zip(self.corrected, sums, strict=True)}

    def counters(self) -> dict[str, float]:
        """What the simulator itself moved, as metrics (nothing, in one process)."""
        return {}

    def _index(self, rows: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(rows, dtype=torch.int64, device=self.params.device)

    def where(self, rows: np.ndarray) -> torch.Tensor:
        """Where the rows ``rows`` lie in the tensors: there, unless rows are on demand."""
        return self._index(rows if self.pool is None else self.pool.physical(rows))

    def admit(self, rows: np.ndarray) -> None:
        """With rows on demand, hold ``rows`` (releasing the rows neither used nor kept): new
        ones start as the full layout's would, with their initial models and zero states."""
        capacity = self.pool.capacity
        new, slots = self.pool.admit(rows)
        if self.pool.capacity != capacity:
            self._resize(capacity, self.pool.capacity)
        if not len(new):
            return
        index = self._index(slots)
        self.params[index] = self.task.initial_models(self._global(new))
        rows_held = [*self.optimizer_state.values(), *self.slots.values()]
        for held in rows_held + list((self.buffer or {}).values()):
            held[index] = 0

    def keep(self, nodes: np.ndarray | None) -> None:
        """The nodes whose rows the strategy keeps after this round (rows on demand only;
        of a shard, those among its rows)."""
        if self.pool is None or nodes is None:
            return
        nodes = np.asarray(nodes, dtype=np.int64)
        if self.row_ids is not None:
            position = np.searchsorted(self.row_ids, nodes).clip(max=len(self.row_ids) - 1)
            nodes = position[self.row_ids[position] == nodes]
        self.pool.keep(nodes)

    def held_nodes(self) -> np.ndarray | None:
        """The nodes that have rows now (None: every node)."""
        return None if self.pool is None else self._global(self.pool.nodes)

    def _global(self, rows: np.ndarray) -> np.ndarray:
        """The global ids of rows of this backend (a shard's are its ``row_ids``)."""
        return rows if self.row_ids is None else self.row_ids[rows]

    def _resize(self, capacity: int, grown: int) -> None:
        """Give the tensors of rows ``grown`` node slots instead of ``capacity``."""
        self.params = resized(self.params, capacity, grown)
        self.optimizer_state = {
            n: resized(r, capacity, grown) for n, r in self.optimizer_state.items()
        }
        self.slots = {name: resized(rows, capacity, grown) for name, rows in self.slots.items()}
        if self.buffer is not None:
            self.buffer = {
                name: resized(rows, capacity, grown) for name, rows in self.buffer.items()
            }
        self._spare = None

    def _tensor(self, values: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(values, dtype=self.params.dtype, device=self.params.device)

    def _gather(self, rows: torch.Tensor) -> torch.Tensor:
        """``self.params[rows]``, written into a buffer kept between chunks and rounds: a
        fresh gathered block cost its page faults each time (872 MLP rows: 5.6 against
        2.4 ms)."""
        kept, params = self._gathered, self.params
        if (
            kept is None
            or len(kept) < len(rows)
            or (kept.shape[1:], kept.dtype, kept.device)
            != (params.shape[1:], params.dtype, params.device)
        ):
            kept = self._gathered = params.new_empty(len(rows), *params.shape[1:])
        return torch.index_select(params, 0, rows, out=kept[: len(rows)])

    def train(self, step: Train, round_idx: int) -> None:
        """Run the step's local training, chunk by chunk, with the optimizer state each row
        keeps (or a fresh one) at the rates of the learning-rate schedule."""
        task, optimizer, schedule = self.task, self.task.optimizer, self.task.lr_schedule
        nodes = torch.as_tensor(step.nodes, dtype=torch.int64, device=self.params.device)
        physical = step.nodes if self.pool is None else self.pool.physical(step.nodes)
        chunk_size = chunk_rows(self.chunk_size, task.layout.size)
        size = max(1, len(nodes) if chunk_size == "auto" else chunk_size)
        consecutive = len(physical) > 1 and bool(np.all(np.diff(physical) == 1))
        for start in range(0, len(nodes), size):
            chunk = nodes[start : start + size]
            work = step.only(slice(start, start + size))
            # consecutive rows train in place, as views; others as gathered copies
            first = int(physical[start])
            rows = (
                slice(first, first + len(chunk))
                if consecutive
                else self._index(physical[start : start + size])
            )
            params = self.params[rows] if consecutive else self._gather(rows)
            state = (
                optimizer.init(params)
                if step.fresh_optimizer
                else {name: held[rows] for name, held in self.optimizer_state.items()}
            )
            ids = chunk if self.node_ids is None else self.node_ids[chunk]
            batches = local_batches(
                task.node_data,
                ids,
                seed=task.seed,
                round_idx=round_idx,
                batch_size=optimizer.batch_size,
                epochs=self._per_node(work.epochs),
                steps=self._per_node(work.steps),
            )
            before = None if self.local_steps is None else self.local_steps[chunk]
            rates = schedule.step_rates(optimizer.lr, round_idx, before, batches.active)
            names = slot_names(step.transforms)
            rewrite = None
            if step.transforms:
                slots = {name: self.slot(name)[rows] for name in names}
                rewrite = Rewrite(step.transforms, params.clone(), slots, ids, round_idx)
            self.trainer.train(
                params,
                state,
                batches,
                *task.node_data.examples(task.dataset, ids),
                rewrite,
                rates,
            )
            taken = batches.active.sum(dim=1)
            if rewrite is not None:
                used = schedule.mean_rate(optimizer.lr, round_idx, rates, batches.active)
                rewrite.finish(params, taken, used)
                for name in names:
                    _put(self.slot(name), rows, rewrite.slots[name])
            _put(self.params, rows, params)
            for name, held in state.items():
                _put(self.optimizer_state[name], rows, held)
            if self.local_steps is not None:
                self.local_steps[chunk] += taken

    def _per_node(self, work: int | np.ndarray | None) -> int | torch.Tensor | None:
        """A Train step's epochs or steps: one number, or per node on the device."""
        if isinstance(work, np.ndarray):
            return torch.as_tensor(work, dtype=torch.int64, device=self.params.device)
        return work

    def _sparse(self, weights: sp.csr_array) -> torch.Tensor:
        """W on the device, converted once per matrix; a bounded cache, since a topology
        drawn afresh every round brings a new matrix each round."""
        key = id(weights)
        if key not in self._mixing:
            if len(self._mixing) >= MIXING_CACHE:
                del self._mixing[next(iter(self._mixing))]  # the oldest entry
            coo = weights.tocoo()
            indices = torch.as_tensor(np.stack([coo.row, coo.col]), dtype=torch.int64)
            matrix = torch.sparse_coo_tensor(
                indices, coo.data, coo.shape, dtype=self.params.dtype, check_invariants=True
            )
            with warnings.catch_warnings():  # "sparse CSR support is in beta state"
                warnings.simplefilter("ignore", UserWarning)
                matrix = matrix.coalesce().to_sparse_csr()  # row-parallel, into a buffer
            self._mixing[key] = (weights, matrix.to(self.params.device))
        return self._mixing[key][1]

    def state(self) -> dict[str, Any]:
        """Copies of everything the rows hold: parameters, optimizer states, local step
        counts (with a schedule by local step), merge buffers, per-row slots,
        server-optimizer states (on CPU), and the correction factors summed since the last
        report."""
        return {
            "params": self.params.cpu().clone(),
            "optimizer": _copy(self.optimizer_state),
            "local_steps": None if self.local_steps is None else self.local_steps.cpu().clone(),
            "buffer": _copy(self.buffer),
            "server_states": {name: _copy(state) for name, state in self.server_states.items()},
            "slots": _copy(self.slots),
            "factor_sum": self.factor_sum.numpy().copy(),
            "factor_count": self.factor_count,
            "pool": None if self.pool is None else self.pool.state(),
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from a :meth:`state`."""
        if self.pool is not None and state.get("pool") is not None:
            capacity = self.pool.capacity
            self.pool.restore(state["pool"])
            self._resize(capacity, self.pool.capacity)
        self.params.copy_(state["params"])
        self.factor_sum.copy_(torch.from_numpy(np.asarray(state["factor_sum"])))
        self.factor_count = int(state["factor_count"])
        saved = state.get("optimizer")
        if saved is None and state.get("momentum") is not None:  # saved before states were named
            saved = {"momentum": state["momentum"]}
        for name, rows in (saved or {}).items():
            self.optimizer_state[name].copy_(rows)
        if self.local_steps is not None and state.get("local_steps") is not None:
            self.local_steps.copy_(state["local_steps"])
        self.server_states = {
            name: {key: value.to(self.params.device) for key, value in saved.items()}
            for name, saved in state.get("server_states", {}).items()
        }
        self.slots = {
            name: rows.to(self.params.device) for name, rows in state.get("slots", {}).items()
        }
        buffer = _copy(state["buffer"])
        self.buffer = (
            None
            if buffer is None
            else {name: value.to(self.params.device) for name, value in buffer.items()}
        )

    def close(self) -> None:
        """Nothing to release in this process."""

    def rows(self, rows: np.ndarray | slice) -> torch.Tensor:
        """A copy of the given rows of the parameter tensor."""
        if self.pool is None:
            return self.params[rows].clone()
        if isinstance(rows, slice):
            rows = np.arange(*rows.indices(self.num_rows))
        return self.params[self.where(rows)]

    def node_mean(self, num_nodes: int, nodes: np.ndarray | None = None) -> torch.Tensor:
        """The average of the node rows (the consensus model), or of ``nodes``' rows."""
        return self._nodes(num_nodes, nodes).mean(dim=0)

    def _nodes(self, num_nodes: int, nodes: np.ndarray | None) -> torch.Tensor:
        """The first ``num_nodes`` rows (a view; with rows on demand, a copy of the held ones),
        or a copy of ``nodes``' rows."""
        if self.pool is not None:
            held = self.pool.nodes[self.pool.nodes < num_nodes]
            nodes = held if nodes is None else np.intersect1d(nodes, held)
        return self.params[:num_nodes] if nodes is None else self.params[self.where(nodes)]

    def all_finite(self) -> bool:
        """Whether every parameter is finite: a finite sum says so in one pass without a copy
        (an inf or nan makes any sum non-finite); only a non-finite sum, which may also be an
        overflow of finite values, is checked value by value, ``FINITE_CHUNK`` at a time."""
        if torch.isfinite(self.params.sum()):
            return True
        rows = max(1, FINITE_CHUNK // max(1, self.params.shape[1]))
        return all(bool(torch.isfinite(chunk).all()) for chunk in self.params.split(rows))

    def consensus_distance(self, num_nodes: int, nodes: np.ndarray | None = None) -> float:
        """Mean squared distance of the node models (or ``nodes``' models) to their average.

        Measured about the first one's model, so that equal models give exactly 0 (a float32
        mean of equal rows may round), with one temporary copy of the node rows.
        """
        rows = self._nodes(num_nodes, nodes)
        shifted = rows - rows[0]
        shifted -= shifted.mean(dim=0)
        return float(shifted.square_().sum(dim=1).mean())


def _put(target: torch.Tensor, rows: slice | torch.Tensor, values: torch.Tensor) -> None:
    """``target[rows] = values``, unless ``values`` already is that view of ``target``."""
    if isinstance(rows, slice):
        view = target[rows]
        if values.data_ptr() == view.data_ptr() and values.stride() == view.stride():
            return
    target[rows] = values


def _copy(tensors: dict[str, torch.Tensor] | None) -> dict[str, torch.Tensor] | None:
    return (
        None if tensors is None else {name: value.cpu().clone() for name, value in tensors.items()}
    )
