"""How much memory a run needs, checked before it starts, and the chunk size that fits.

The estimate is an upper bound computed from the run's shapes; ``rows`` below is the
(rows, d) float32 federation tensor, ``d x 4`` bytes per row.

Held from when they are made to the end of the run:

- ``parameters``: the federation tensor; ``momentum``: the local optimizer's per-row
  state, as much again per state tensor (SGD's momentum when ``optimizer.momentum > 0``,
  Adam's two moments).
- ``slots``: the per-row states the plan of round 0 keeps beside the models, a (rows, d)
  tensor each (SCAFFOLD's control variates, the c it received, their change), and
  ``SERVER_STATE_ROWS`` rows per server row a server optimizer moves (FedAdam's moments).
- ``buffers``: when the plan of round 0 pushes models (push-and-merge gossip), each row's
  merge buffer: a row, a weight and the variances of the tensors the aggregator corrects.
- ``mixing``: the gossip matrices the backend converts to torch (20 bytes per non-zero:
  two int64 indices and a value, at their conversion) and caches, up to ``MIXING_CACHE``;
  a matrix planned afresh every round also keeps its scipy copy alive (16 bytes per
  non-zero); and the spare (rows, d) buffer that the backend writes ``W X`` into, held
  from the first gossip on (the product itself makes nothing more, measured).
- ``initialisation``: with ``init=independent``, the list of per-row models that is
  stacked into the rows, and per row its generators and tensor objects
  (``INIT_ROW_BYTES``, measured): blocks this small stay in the allocator's heap.
- ``bookkeeping``: ``BOOKKEEPING_PER_NODE`` bytes per row: the engine's per-row arrays
  (bytes sent, aggregations, the clock: 24 bytes) and their copies in a checkpoint.
- ``runtime``: ``RUNTIME_BYTES`` that any run allocates once it starts (the trainer's and
  evaluator's first calls, the parquet writer's pool, the progress bar), and with the
  per-node loop ``LOOP_RUNTIME_BYTES`` more (torch.optim's first optimizer imports
  torch._dynamo: 69 MiB).
- ``data``: the data set tensors and the nodes' index table (already loaded when the run
  is checked, so :func:`check_memory` does not count them as still needed).

Made of small tensors, and kept: glibc serves blocks under its mmap threshold (raised up
to 32 MiB as such blocks are freed) from heaps it seldom gives back, so what these parts
allocate stays resident, fragmented, after they end; the largest of
``HEAP_FACTOR x training`` (without its per-example gradients), ``evaluation`` and
``communication results kept`` counts:

- ``training``: per node of a chunk, ``d x 4`` bytes for each of the gathered rows (a
  chunk of consecutive rows trains in place), the gradients autograd returns and the
  gradient buffer they are copied into, the chunk's optimizer state and the temporaries
  of its step (with SGD's momentum its update, with weight decay one more; Adam two, and
  one for L2 weight decay), and vectorised, the state of the nodes that take a step few
  take, gathered apart with their rows (fewer than ``FEW`` of the chunk,
  fedsim.training.vectorised: their rows and gradients fit in those of a whole step); then
  the activations of a mini-batch and the chunk's mini-batch schedule.  A chunk holds
  ``backend.chunk_size`` nodes, at most those trained in a round.  Training raised the
  peak by 1.2 to 1.7 rows per node of a chunk (MLP, chunks of 872 and 2,000 nodes, D-PSGD
  and FedAvg's gathered rows, against chunks of 16); ``HEAP_FACTOR`` is 1.5 (chunks of
  256 nodes without the gradient buffer, the heap held 1.3 times the 5 rows per node then
  counted).
- ``evaluation``: the activations of the (row, test example) pairs evaluated at once.
- ``communication results kept``: the results a step holds until all are written (an
  ``Aggregate``: one per group) that are each under glibc's largest mmap threshold.
  Gossip learning at 10,000 nodes merges in 10,000 one-row groups: their 38 KB results,
  367 MiB, stayed resident after the step, under the checkpoint's copies (peak 2,102 MiB
  against 2,088 estimated when they were counted as given back).

Made of tensors as large as the federation's, given back when freed; the largest counts:

- ``private training`` (``privacy=...``): per node trained at once, five rows per example
  of the batch (``grad`` under two ``vmap``s keeps each layer's per-example gradients, the
  flattened (B, d) block and its clipped copy) and four for the float64 noise row.
  Measured as the growth of peak resident memory over one private round (torch 2.13,
  batches of 16, vectorised): MLP 64 and 256 nodes 221 and 669 MiB, LeNet-5 16 nodes 355
  MiB, which the estimate puts at 0.97 to 1.28 times that; on the loop path (one node at a
  time, a few MiB) it is part of ``training``.
- ``communication`` (from the plan of round 0): the rows of working memory of the most
  demanding step, as each step counts them (``working_rows`` in fedsim.plans): a gossip
  step writes ``W X`` into the spare buffer (``mixing``) and makes nothing more, but with
  a variance-corrected aggregator three rows (the receivers' rows, their corrected copy,
  each tensor's centred block: 2.7 measured besides the product); an average gathers
  its sources and makes its average (and its corrected copy); a push gathers the pushed
  rows and weights them in place (one row per message, two when the variances of what is
  sent are taken); a merge gathers each merging node's row and buffer and combines them
  in place (``MERGE_ROWS``), one row more with a corrected aggregator; an aggregator that
  combines the models themselves (median, Krum) works on ``COMBINE_ROWS`` rows per model received.
- ``evaluation rows``: the copy of the evaluated rows, the copy of every node row that
  the consensus distance takes, and the recorder's rows of per-node metrics
  (``RECORDER_ROW_BYTES`` each as Python lists and their arrow table: measured 480 bytes
  at most, 80,000 rows).
- ``checkpoint``: the copies of parameters, optimizer state, per-row states and buffers
  that a checkpoint holds while it is written (after the last round at least).
- ``finite check``: ``LocalBackend.all_finite`` sums the rows in place after every round,
  and only when that sum is not finite checks ``FINITE_CHUNK`` values at a time
  (``torch.isfinite`` makes their absolute values and flags: 7 bytes per value, measured).

Activations come from one forward pass of one example with forward hooks on every
module: the input and every distinct tensor a module outputs.  Autograd keeps these for
the backward pass, plus what functional calls inside a ``forward`` make (an inline ReLU,
a residual sum), norm layers' statistics, pooling indices, and under vmap the inputs
laid out again per node; the backward pass then holds gradients as large as the largest
output, two at a time.  fedsim counts ``ACTIVATION_FACTOR x sum + 2 x largest`` float32
values per training example.  Evaluation keeps no activations for a backward pass:
per (row, test example) pair it counts ``sum + 2 x largest``, or ``EVALUATION_LIVE x
largest`` when that is less (deep models free each layer's input once it is used).  The
factors and the row copies were measured as the growth of peak resident memory over one
round on CPU (torch 2.13, 64 nodes, batches of 16; MLP, LeNet-5, GN-LeNet, the FEMNIST
CNN, ResNet-8 and -20, vectorised and looped): the estimate of training was 1.1 to 1.7
times the measured peak, that of evaluation 1.3 to 2.1 times.  CUDA's caching allocator
(which also keeps freed blocks) and cuDNN workspaces were not measured.

The run's own memory (``total``) is the held parts, the kept part and the largest large
one.  On CPU the process's peak resident memory (``peak``) is what it held when the
estimate was made (``resident``, measured: interpreter, libraries, the data set, the
built run) plus what the run will still allocate (``to_allocate``).
``scripts/memory_bound.py`` compares ``peak`` with the peak resident memory of
``fedsim run`` over a grid (``scripts/results/memory_bound.md``: torch 2.13, CPU, 100 to
200,000 nodes; FedAvg, D-PSGD, push-and-merge gossip, gossip learning, private D-PSGD;
MLP, logistic regression, LeNet-5; momentum, a corrected aggregator,
``init=independent``): the measured peak was 0.84 to 0.99 times ``peak``.  There the
measured peak less every part but ``runtime`` and ``bookkeeping`` was at most 22 MiB,
53 MiB at 200,000 nodes.  In fresh clones (their own venv, the test suite running beside)
the same 2,000-node D-PSGD run peaked 82 to 122 MiB higher than in the development tree
(834 and 874 MiB against 727 to 752), so ``RUNTIME_BYTES`` allowed 128 MiB; since a run
writes its tables without importing pandas, that run peaks 29 MiB lower (669 to 640 MiB),
and ``RUNTIME_BYTES`` allows 96 MiB.  Evaluating
thousands of nodes no longer fragments the heap (``Evaluator.accuracies`` fills one
preallocated result; before, up to 2 GB from run to run at ``eval_nodes=20000``).
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from fedsim.backends.local import FINITE_CHUNK, MIXING_CACHE
from fedsim.errors import ConfigError
from fedsim.messages import MessageTransforms
from fedsim.plans import SPARE_ROWS, Combining, RoundPlan, Train
from fedsim.training.evaluate import Evaluator
from fedsim.training.vectorised import FEW

if TYPE_CHECKING:
    from fedsim.aggregators import Aggregator
    from fedsim.federation import Federation
    from fedsim.task import Task
    from fedsim.topology.base import Topology

FLOAT_BYTES = 4
SAFETY = 0.9  # refuse a run that needs more than this share of the available memory
ACTIVATION_FACTOR = 3  # saved tensors per module output, measured (module docstring)
EVALUATION_LIVE = 8  # live tensors of the largest size without gradients, measured
# fedsim.training.schedule.local_batches, per node: random keys and their order (32 bytes
# per epoch and example), each step's epoch order (8 bytes per step and example), then
# indices, slots, validity and mask (29 bytes per step and batch slot).
KEY_BYTES, ORDER_BYTES, SLOT_BYTES = 32, 8, 29
SERVER_STATE_ROWS = 2  # rows of server-optimizer state per server row (Adam's m and v)
MESSAGE_ROWS = 8  # per row whose messages are rewritten on the way: the sent copy and its
# gathered rows, the update from the receiver's model, a top-k's magnitudes, sorted values
# and int64 order, the decoded row and error feedback's sum (a D-PSGD round of 5,000 nodes
# with top-k and error feedback peaked 2,305 MiB, 1,273 MiB above the plain round's 1,032;
# counted 1,466 MiB: scripts/results/memory_bound_messages.md)
TORCH_SPARSE_BYTES, SCIPY_SPARSE_BYTES = 20, 16  # per non-zero of a cached mixing matrix
NODE_METRICS = 4  # per-node metrics recorded at each evaluation (metrics.reporters.Reporter)
BOOKKEEPING_PER_NODE = 128  # measured (module docstring)
RUNTIME_BYTES = 96 * 2**20  # measured (module docstring)
LOOP_RUNTIME_BYTES = 72 * 2**20  # torch.optim's first optimizer imports torch._dynamo
RECORDER_ROW_BYTES = 512  # measured (module docstring)
INIT_ROW_BYTES = 1536  # per row of init=independent besides its model, measured
FINITE_CHECK_BYTES_PER_VALUE = 8  # torch.isfinite: |x| and flags, 7 bytes, measured
HEAP_FACTOR = 1.5  # the heap after a round of training chunks (module docstring), measured
MMAP_THRESHOLD_MAX = 32 * 2**20  # glibc (64-bit) serves blocks under this from its heap


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes a run needs at its peak, by part (see the module docstring).

    ``training`` is ``training_fixed + chunk_size x (training_per_node +
    private_per_node)``; no other part depends on the chunk size.  ``resident`` (not
    compared) is what the process held when the estimate was made, measured (0 off CPU).
    """

    parameters: int
    momentum: int
    slots: int
    buffers: int
    mixing: int
    bookkeeping: int
    runtime: int
    data: int
    training_per_node: int
    training_fixed: int
    private_per_node: int
    communication: int
    communication_kept: int
    evaluation: int
    evaluation_rows: int
    initialisation: int
    checkpoint: int
    finite_check: int
    chunk_size: int
    max_chunk_size: int
    num_nodes: int
    num_rows: int
    num_parameters: int
    rows_on_demand: int | None = None  # rows held with backend.rows=on_demand, where it would
    resident: int = dataclasses.field(default=0, compare=False)

    @property
    def training(self) -> int:
        """Bytes of one training chunk."""
        return self.training_fixed + self.chunk_size * (
            self.training_per_node + self.private_per_node
        )

    @property
    def private_training(self) -> int:
        """Bytes of a chunk's per-example gradients and noise (private training, vectorised)."""
        return self.chunk_size * self.private_per_node

    @property
    def held(self) -> int:
        """Bytes held to the end of the run, besides the data set."""
        return (
            self.parameters
            + self.momentum
            + self.slots
            + self.buffers
            + self.mixing
            + self.bookkeeping
            + self.runtime
            + self.initialisation
        )

    @property
    def kept(self) -> int:
        """Bytes the allocator keeps of the parts made of small tensors (module docstring)."""
        small_training = self.training - self.private_training
        return max(
            math.ceil(HEAP_FACTOR * small_training), self.evaluation, self.communication_kept
        )

    @property
    def transient(self) -> int:
        """Bytes of the largest part made of tensors as large as the federation's."""
        return max(
            self.private_training,
            self.communication,
            self.evaluation_rows,
            self.checkpoint,
            self.finite_check,
        )

    @property
    def total(self) -> int:
        """Peak bytes of the run: the held parts, the data, and the largest kept and
        transient parts."""
        return self.held + self.data + self.kept + self.transient

    @property
    def to_allocate(self) -> int:
        """Peak bytes beyond the data set, which is loaded before the run is checked."""
        return self.total - self.data

    @property
    def peak(self) -> int:
        """Peak resident bytes of the process: what it held when estimated, plus the rest."""
        return self.resident + self.to_allocate

    def with_chunk_size(self, chunk_size: int) -> MemoryEstimate:
        """The same run trained in chunks of ``chunk_size`` nodes (at most those trained)."""
        return dataclasses.replace(self, chunk_size=max(1, min(chunk_size, self.max_chunk_size)))

    def describe(self) -> str:
        """The parts as one line: ``parameters 1.2 GiB (101 rows x 7,000 x 4 bytes), ...``."""
        parts = [
            f"parameters {format_bytes(self.parameters)} "
            f"({self.num_rows:,} rows x {self.num_parameters:,} x {FLOAT_BYTES} bytes)",
            f"momentum {format_bytes(self.momentum)}",
            f"per-row states {format_bytes(self.slots)}",
            f"merge buffers {format_bytes(self.buffers)}",
            f"mixing matrices {format_bytes(self.mixing)}",
            f"per-node bookkeeping {format_bytes(self.bookkeeping)}",
            f"runtime {format_bytes(self.runtime)}",
            f"data {format_bytes(self.data)}",
            f"training chunks of {self.chunk_size:,} nodes {format_bytes(self.training)}",
            f"communication {format_bytes(self.communication)}",
            f"communication results kept {format_bytes(self.communication_kept)}",
            f"evaluation {format_bytes(self.evaluation)}",
            f"evaluation rows {format_bytes(self.evaluation_rows)}",
            f"initialisation {format_bytes(self.initialisation)}",
            f"checkpoint {format_bytes(self.checkpoint)}",
            f"finite check {format_bytes(self.finite_check)}",
        ]
        return ", ".join(part for part in parts if not part.endswith(" 0 B"))


def estimate_memory(
    task: Task,
    federation: Federation,
    plan: RoundPlan,
    *,
    num_servers: int,
    aggregator: Aggregator,
    rounds: int,
    eval_nodes: int,
    private: bool,
    vectorise: bool | str,
    chunk_size: int | None = None,
    messages: MessageTransforms | None = None,
    held_rows: int | None = None,
    rows_on_demand: int | None = None,
) -> MemoryEstimate:
    """The memory a run will need, trained in chunks of ``chunk_size`` nodes (None: all the
    nodes a round trains at once).

    A pure function of the run's parts: its ``task`` and ``federation``, the plan of round 0
    (``plan``, :func:`fedsim.build.first_plan`: who trains and how models are combined), the
    strategy's ``num_servers`` (rows after the nodes), the ``aggregator``, the number of
    ``rounds``, the ``eval_nodes`` setting, whether training is ``private``, the
    backend's ``vectorise`` setting and the ``messages`` transforms; ``held_rows`` the
    rows a backend with rows on demand holds at once (None: every row), and
    ``rows_on_demand`` what it would hold where the strategy allows it (for advice).
    Cheap: one forward pass of one example.  What the process holds already is measured apart
    (:func:`with_resident_memory`).
    """
    num_nodes, num_rows = federation.num_nodes, federation.num_nodes + num_servers
    rows = num_rows if held_rows is None else held_rows
    evaluated = min(eval_nodes, num_nodes, rows)
    trains = [training for step in plan.steps if (training := step.training()) is not None]
    vectorised = task.prefers_vectorised() if vectorise == "auto" else bool(vectorise)
    held = _held_parts(task, rows, vectorised)
    held["bookkeeping"] = num_rows * BOOKKEEPING_PER_NODE  # every node's, held or not
    messages = messages or MessageTransforms()
    combining = Combining(aggregator.corrects, aggregator.combines_rows)
    held["slots"] = _slot_bytes(task, plan, rows, messages)
    held["buffers"] = _buffer_bytes(task, plan, rows, aggregator)
    held["mixing"] = _mixing_bytes(plan, federation.topology, rounds)
    if held["mixing"]:  # the spare rows that W X is written into, from the first gossip on
        held["mixing"] += SPARE_ROWS * rows * task.layout.size * FLOAT_BYTES
    estimate = MemoryEstimate(
        **held,
        **_small_parts(task, trains, vectorised, private, evaluated),
        communication=_communication_bytes(task, plan, num_nodes, combining, messages),
        communication_kept=_kept_results_bytes(task, plan, num_nodes, combining),
        evaluation_rows=_evaluation_rows_bytes(task, evaluated, min(num_nodes, rows)),
        **_end_of_round_parts(held, rows * task.layout.size, rounds),
        data=_data_bytes(task),
        chunk_size=1,
        max_chunk_size=max([len(step.nodes) for step in trains], default=0) or num_nodes,
        num_nodes=num_nodes,
        num_rows=rows,
        num_parameters=task.layout.size,
        rows_on_demand=rows_on_demand,
    )
    return estimate.with_chunk_size(estimate.max_chunk_size if chunk_size is None else chunk_size)


def with_resident_memory(estimate: MemoryEstimate, device: torch.device) -> MemoryEstimate:
    """``estimate`` with what this process holds now (``resident``), measured on CPU."""
    return dataclasses.replace(estimate, resident=resident_memory() if device.type == "cpu" else 0)


def _held_parts(task: Task, num_rows: int, vectorised: bool) -> dict[str, int]:
    """The parts held to the end of the run, besides the data set, the merge buffers and
    the mixing matrices (module docstring)."""
    row_bytes = task.layout.size * FLOAT_BYTES
    independent = task.init == "independent"
    return {
        "parameters": num_rows * row_bytes,
        "momentum": num_rows * row_bytes * task.optimizer.state_rows,
        "initialisation": num_rows * (row_bytes + INIT_ROW_BYTES) if independent else 0,
        "bookkeeping": num_rows * BOOKKEEPING_PER_NODE,
        "runtime": RUNTIME_BYTES + (not vectorised) * LOOP_RUNTIME_BYTES,
    }


def _small_parts(
    task: Task, trains: list[Train], vectorised: bool, private: bool, evaluated: int
) -> dict[str, int]:
    """Training (per node of a chunk, per chunk, per node of private training) and the
    activations of evaluating ``evaluated`` nodes."""
    saved, largest = activation_sizes(task.model, task.dataset.train_x[:1])
    per_example = math.ceil(ACTIVATION_FACTOR * saved) + 2 * largest
    per_pair = min(saved + 2 * largest, EVALUATION_LIVE * largest)
    per_node, fixed, per_node_private = _training_bytes(
        task, trains, per_example, vectorised, private
    )
    return {
        "training_per_node": per_node,
        "training_fixed": fixed,
        "private_per_node": per_node_private,
        "evaluation": _evaluation_bytes(task, evaluated, per_pair),
    }


def _end_of_round_parts(held: dict[str, int], values: int, rounds: int) -> dict[str, int]:
    """A checkpoint's copies of the held rows, and the finite check of the ``values``
    parameters: made only when a round runs."""
    return {
        "checkpoint": (
            held["parameters"] + held["momentum"] + held["slots"] + held["buffers"] if rounds else 0
        ),
        "finite_check": FINITE_CHECK_BYTES_PER_VALUE * min(FINITE_CHUNK, values) if rounds else 0,
    }


def _training_bytes(
    task: Task,
    trains: list[Train],
    activations_per_example: int,
    vectorised: bool,
    private: bool = False,
) -> tuple[int, int, int]:
    """(bytes per node of a chunk, bytes per chunk whatever its size, bytes per node of a
    chunk's per-example gradients and noise) of local training."""
    optimizer, row_bytes = task.optimizer, task.layout.size * FLOAT_BYTES
    per_example_gradients = private * (5 * optimizer.batch_size + 4) * row_bytes
    state = optimizer.state_rows
    copies = 3 + state + optimizer.step_temporaries
    activations = optimizer.batch_size * activations_per_example * FLOAT_BYTES
    counts = task.node_data.num_examples
    schedule = max(
        [schedule_bytes(counts, optimizer.batch_size, s.most_epochs, s.most_steps) for s in trains],
        default=0,
    )
    if vectorised:
        copies += FEW * state  # a step that few take: their state gathered apart
        return math.ceil(copies * row_bytes) + activations + schedule, 0, per_example_gradients
    # The loop gathers the chunk's rows (and optimizer state), then trains one model at a time.
    fixed = copies * row_bytes + activations + per_example_gradients
    return (1 + state) * row_bytes + schedule, fixed, 0


def _evaluation_bytes(task: Task, evaluated: int, activations_per_example: int) -> int:
    """The activations of the (row, test example) pairs that
    :class:`~fedsim.training.evaluate.Evaluator` runs at once over ``evaluated`` rows."""
    test_examples = len(task.dataset.test_y)
    budget = inspect.signature(Evaluator).parameters["budget"].default
    rows_at_once = max(1, min(evaluated, budget // max(1, test_examples)))
    return rows_at_once * test_examples * activations_per_example * FLOAT_BYTES


def _evaluation_rows_bytes(task: Task, evaluated: int, num_nodes: int) -> int:
    """The copy of the ``evaluated`` rows, the copy of every node row that the consensus
    distance takes, and the recorder's rows of per-node metrics."""
    row_bytes = task.layout.size * FLOAT_BYTES
    recorded = evaluated * NODE_METRICS * RECORDER_ROW_BYTES
    return (evaluated + num_nodes) * row_bytes + recorded


def _slot_bytes(task: Task, plan: RoundPlan, num_rows: int, messages: MessageTransforms) -> int:
    """The per-row states the plan's steps and the message transforms keep beside the
    models (SCAFFOLD's control variates, an error-feedback residual: one (rows, d) tensor
    each), and the state of every server update (at most two rows per target: Adam's
    moments)."""
    names = set().union(*(step.slot_names() for step in plan.steps), messages.slot_names())
    updated = sum(
        len(step.targets) for step in plan.steps if getattr(step, "update", None) is not None
    )
    return (len(names) * num_rows + SERVER_STATE_ROWS * updated) * task.layout.size * FLOAT_BYTES


def _buffer_bytes(task: Task, plan: RoundPlan, num_rows: int, aggregator: Aggregator) -> int:
    """Every row's merge buffer (a row, its weight, the corrected tensors' variances) when
    the plan pushes models; nothing otherwise."""
    if not any(step.fills_buffers for step in plan.steps):
        return 0
    corrected = len(aggregator.tensors(task.layout))
    return num_rows * (task.layout.size + 1 + corrected) * FLOAT_BYTES


def _mixing_bytes(plan: RoundPlan, topology: Topology | None, rounds: int) -> int:
    """The gossip matrices the backend keeps: round 0's for a static topology, one per
    round of a time-varying topology's period (every round when it has none), up to the
    backend's cache; a strategy that builds its own (gossip learning) a new set each round."""
    matrices = [matrix for step in plan.steps for matrix in step.mixing_matrices()]
    if not matrices:
        return 0
    largest = max(matrix.nnz for matrix in matrices)
    own = topology is not None and all(matrix is topology.mixing(0) for matrix in matrices)
    if own and not topology.time_varying:
        return len({id(matrix) for matrix in matrices}) * largest * TORCH_SPARSE_BYTES
    period = topology.graphs.period if own else None
    if period == 1:
        return len(matrices) * largest * TORCH_SPARSE_BYTES
    kept = min(MIXING_CACHE, (period or rounds) * len(matrices))
    return kept * largest * (TORCH_SPARSE_BYTES + SCIPY_SPARSE_BYTES)


def _communication_bytes(
    task: Task, plan: RoundPlan, num_nodes: int, combining: Combining, messages: MessageTransforms
) -> int:
    """The rows that the plan's most demanding step makes (each step says how many), and
    with message transforms, ``MESSAGE_ROWS`` per sender of the step with most senders."""
    rows = max([step.working_rows(num_nodes, combining) for step in plan.steps], default=0)
    if messages:
        senders = [len(np.unique(step.messages(num_nodes).senders)) for step in plan.steps]
        rows += MESSAGE_ROWS * max(senders, default=0)
    return rows * task.layout.size * FLOAT_BYTES


def _kept_results_bytes(task: Task, plan: RoundPlan, num_nodes: int, combining: Combining) -> int:
    """The results that the plan's steps hold at once, each too small for glibc to map
    apart (under ``MMAP_THRESHOLD_MAX``): its heap keeps them once they are freed."""
    row_bytes = task.layout.size * FLOAT_BYTES
    held = [
        [rows * row_bytes for rows in step.held_results(num_nodes, combining)]
        for step in plan.steps
    ]
    return max(
        [sum(size for size in sizes if size < MMAP_THRESHOLD_MAX) for sizes in held], default=0
    )


def _data_bytes(task: Task) -> int:
    dataset, node_data = task.dataset, task.node_data
    tensors = [dataset.train_x, dataset.train_y, dataset.test_x, dataset.test_y]
    return sum(tensor.nelement() * tensor.element_size() for tensor in tensors) + node_data.nbytes


def resident_memory() -> int:
    """Bytes this process holds in memory now (0: cannot tell)."""
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except ImportError:
        pass
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return 0
    return pages * os.sysconf("SC_PAGE_SIZE")


def activation_sizes(model: nn.Module, example: torch.Tensor) -> tuple[int, int]:
    """(sum, largest) of the float counts of the input and of every distinct tensor a
    module outputs, for one example.

    ``example`` is a batch of one; it runs through ``model`` once, without gradients.
    Views (a flattened input, a container's output) count once.  A model that cannot
    take the example raises :class:`ConfigError`.
    """
    sizes = {example.data_ptr(): example[0].nelement()}
    kept = []  # alive until the end, so that no two outputs share an address

    def record(module: nn.Module, inputs: object, output: object) -> None:
        for tensor in _tensors(output):
            if tensor.dim() > 0:
                kept.append(tensor)
                sizes.setdefault(tensor.data_ptr(), tensor[0].nelement())

    handles = [module.register_forward_hook(record) for module in model.modules()]
    try:
        with torch.no_grad():
            model(example)
    except RuntimeError as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ConfigError(
            f"the model cannot take the data's inputs of shape {tuple(example.shape[1:])}: {reason}"
        ) from None
    finally:
        for handle in handles:
            handle.remove()
    return sum(sizes.values()), max(sizes.values())


def _tensors(output: object) -> list[torch.Tensor]:
    if isinstance(output, torch.Tensor):
        return [output]
    if isinstance(output, list | tuple):
        return [tensor for item in output for tensor in _tensors(item)]
    if isinstance(output, dict):
        return [tensor for item in output.values() for tensor in _tensors(item)]
    return []


def schedule_bytes(
    counts: Iterable[int], batch_size: int, epochs: int | None, steps: int | None
) -> int:
    """Bytes of one node's mini-batch schedule in a chunk (an upper bound over the nodes).

    ``counts`` are every node's numbers of examples: a chunk's schedule is as wide as its
    largest node, and in ``steps`` mode takes as many epochs as its smallest needs.
    """
    counts = np.asarray(list(counts) if not isinstance(counts, np.ndarray) else counts)
    width = max(1, int(counts.max(initial=1)))
    if epochs is not None:
        num_epochs, num_steps = epochs, epochs * math.ceil(width / batch_size)
    else:
        smallest = int(counts[counts > 0].min(initial=width)) if len(counts) else 1
        num_steps = steps or 0
        num_epochs = math.ceil(num_steps / math.ceil(smallest / batch_size))
    return (
        KEY_BYTES * num_epochs * width
        + ORDER_BYTES * num_steps * width
        + SLOT_BYTES * num_steps * batch_size
    )


# What numpy and torch say when an array is too large to allocate or even to describe.
ALLOCATION_FAILURES = (
    "can't allocate memory",
    "out of memory",
    "Storage size calculation overflowed",
    "Maximum allowed dimension exceeded",
    "array is too big",
)


def allocation_failure(error: BaseException) -> str | None:
    """One line on why ``error`` (or an exception that caused it) is a failed allocation, or
    None when it is something else.

    For turning a factory that asks for more memory than exists (``data.tile=10**12``)
    into a :class:`ConfigError` instead of a traceback.
    """
    cause: BaseException | None = error
    while cause is not None:
        text = " ".join(str(cause).split())
        if isinstance(cause, MemoryError) or any(phrase in text for phrase in ALLOCATION_FAILURES):
            return f"{type(cause).__name__}: {text}"[:300]
        cause = cause.__cause__ or cause.__context__
    return None


def check_memory(estimate: MemoryEstimate, device: torch.device) -> None:
    """Raise :class:`ConfigError` when the run needs more than 90 % of the available memory.

    The data set counts as loaded already.  Nothing is checked where the available memory
    cannot be read.
    """
    available = available_memory(device)
    if available is None or estimate.to_allocate <= SAFETY * available:
        return
    budget = int(SAFETY * available)
    advice = []
    chunk_size = choose_chunk_size(estimate, budget)
    if estimate.with_chunk_size(chunk_size).to_allocate <= budget:
        advice.append(f"set backend.chunk_size={chunk_size} (now {estimate.chunk_size})")
    if estimate.rows_on_demand is not None:
        advice.append(
            f"set backend.rows=on_demand (this strategy's clients hold nothing between rounds: "
            f"{estimate.rows_on_demand:,} rows held, not {estimate.num_rows:,})"
        )
    advice += [
        f"use fewer nodes than num_nodes={estimate.num_nodes}",
        "a smaller model or a device with more memory",
    ]
    raise ConfigError(
        f"this run needs about {format_bytes(estimate.to_allocate)} more memory on {device} "
        f"but {format_bytes(available)} is available ({estimate.describe()}); "
        f"{', '.join(advice)}"
    )


def memory_budget(device: torch.device) -> int | None:
    """The bytes a run may take on ``device``: 90 % of what is available (None: unknown)."""
    available = available_memory(device)
    return None if available is None else int(SAFETY * available)


def choose_chunk_size(estimate: MemoryEstimate, budget: int) -> int:
    """The largest chunk size whose run fits in ``budget`` bytes (1 when none does)."""
    low, high = 1, estimate.max_chunk_size
    while low < high:  # the estimate grows with the chunk size
        middle = (low + high + 1) // 2
        if estimate.with_chunk_size(middle).to_allocate <= budget:
            low = middle
        else:
            high = middle - 1
    return low


def available_memory(device: torch.device) -> int | None:
    """Free bytes on ``device`` (None: cannot tell).

    CUDA: the driver's free memory.  CPU: the least of the system's available memory
    (psutil if installed, else ``MemAvailable`` of ``/proc/meminfo``) and the headroom of
    this process's cgroup (v1 or v2), whose limit is what a container or batch job enforces.
    """
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type != "cpu":
        return None
    try:
        import psutil

        system: int | None = int(psutil.virtual_memory().available)
    except ImportError:
        system = _meminfo_available()
    known = [value for value in (system, _cgroup_headroom()) if value is not None]
    return min(known) if known else None


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


# (mount point, limit, usage, inactive page cache in memory.stat) of cgroup v2 and v1
CGROUP_FILES = {
    "v2": ("sys/fs/cgroup", "memory.max", "memory.current", "inactive_file"),
    "v1": ("sys/fs/cgroup/memory", "memory.limit_in_bytes", "memory.usage_in_bytes",
           "total_inactive_file"),
}  # fmt: skip
NO_LIMIT = 1 << 62  # cgroup v1 writes "no limit" as a number close to 2^63


def _cgroup_headroom(root: Path = Path("/")) -> int | None:
    """The cgroup's limit less its working set (usage less inactive page cache).

    ``root`` is where the file system starts (another folder in tests).
    """
    try:
        entries = [line.split(":", 2) for line in (root / "proc/self/cgroup").read_text().split()]
    except OSError:
        return None
    for hierarchy, controllers, path in (entry for entry in entries if len(entry) == 3):
        version = "v2" if hierarchy == "0" else "v1" if "memory" in controllers.split(",") else ""
        if not version:
            continue
        mount, limit_file, usage_file, inactive_key = CGROUP_FILES[version]
        for folder in (root / mount / path.lstrip("/"), root / mount):
            try:
                limit = (folder / limit_file).read_text().strip()
                usage = int((folder / usage_file).read_text())
                stat = (folder / "memory.stat").read_text().split("\n")
            except (OSError, ValueError):
                continue
            if limit == "max" or int(limit) >= NO_LIMIT:
                break
            fields = dict(line.split() for line in stat if len(line.split()) == 2)
            return max(0, int(limit) - usage + int(fields.get(inactive_key, 0)))
    return None


def format_bytes(count: int) -> str:
    """A byte count for people: ``1536`` -> ``"1.5 KiB"``."""
    if count < 1024:
        return f"{count} B"
    value = float(count)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if value < 1024:
            return f"{value:.1f} {unit}"
    return f"{value / 1024:.1f} PiB"
