"""Round plans: what a strategy asks the engine to do in one round, as pure data.

Rows of the federation tensor are the n nodes (0 .. n-1) followed by the strategy's
servers (n, n+1, ...).  A plan is an ordered tuple of steps; the engine executes them in
order and counts the messages each step implies.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from fedsim.errors import check

if TYPE_CHECKING:
    import scipy.sparse as sp

    from fedsim.server_optimizers.base import ServerOptimizer
    from fedsim.training.transforms import GradientTransform


@dataclass(frozen=True, eq=False)
class Messages:
    """The model messages of one step, the one description that bytes, aggregation counts,
    channels and the simulated clock derive from.

    Message k carries row ``senders[k]``'s model to row ``receivers[k]`` (a row never sends
    to itself); each of ``combiners`` combines several models into its own, once per entry;
    ``link`` is the channel: ``d2d`` between nodes, ``uplink`` node to server, ``downlink``
    server to node, None for a step that sends nothing.  ``fan_in[k]`` is how many models
    ``combiners[k]`` combines (its own among them in gossip), 0 where the plan cannot say
    (a merge of whatever its buffer holds).  ``side_bytes`` is what every message carries
    besides the model (FedNova's local step count), counted as control traffic.
    """

    senders: np.ndarray
    receivers: np.ndarray
    combiners: np.ndarray
    link: str | None
    fan_in: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    side_bytes: int = 0

    def sent(self, num_rows: int) -> np.ndarray:
        """Messages each row sends (a (num_rows,) int array)."""
        return np.bincount(self.senders, minlength=num_rows).astype(np.int64)

    def aggregations(self, num_rows: int) -> np.ndarray:
        """Averages each row computes."""
        return np.bincount(self.combiners, minlength=num_rows).astype(np.int64)


def _messages(
    senders: np.ndarray,
    receivers: np.ndarray,
    combiners: np.ndarray,
    link: str | None,
    fan_in: np.ndarray | int = 0,
    side_bytes: int = 0,
) -> Messages:
    """``Messages`` without the transfers of a row to itself."""
    senders, receivers = np.asarray(senders, np.int64), np.asarray(receivers, np.int64)
    combiners = np.asarray(combiners, np.int64)
    moving = senders != receivers
    fan_in = np.broadcast_to(np.asarray(fan_in, np.int64), combiners.shape).copy()
    return Messages(senders[moving], receivers[moving], combiners, link, fan_in, side_bytes)


NO_MESSAGES = _messages(np.empty(0), np.empty(0), np.empty(0), None)

# Working memory a backend makes executing a step, in rows of the federation (the memory
# estimate's ``communication`` part, fedsim.memory): each step's ``working_rows``.
SPARE_ROWS = 1  # the backend's buffer that W X is written into, held from a first gossip on
CORRECTED_GOSSIP_ROWS = 3  # more with a variance-corrected aggregator, measured 2.7
MERGE_ROWS = 2  # rows per merging node at once (LocalBackend.merge: its gathered row and
# buffer, weighted in place), counted; one more with a corrected aggregator
REPLICA_ROWS = 2  # a replicated or stepped gossip's change of the replicas and W S - S
COMBINE_ROWS = 4  # per received model, for an aggregator that combines the models: the
# gathered models, the median's sorted values and their int64 order (counted)


class PlanStep:
    """What every step describes of itself besides its messages, so that the simulated
    clock and the memory estimate read steps without knowing their kinds: the local
    training it runs, the mixing matrices it multiplies by, and whether it fills the rows'
    merge buffers (a :class:`Push`)."""

    fills_buffers: ClassVar[bool] = False

    def training(self) -> Train | None:
        """The local training this step runs (None: it only moves models)."""
        return None

    def mixing_matrices(self) -> tuple[sp.csr_array, ...]:
        """The mixing matrices it multiplies the rows by."""
        return ()

    def held_results(self, num_nodes: int, combining: Combining) -> list[int]:
        """The rows of each of the several results it holds until all are written (none:
        it writes one); fedsim.memory counts the small ones as kept in the heap."""
        return []


@dataclass(frozen=True)
class Combining:
    """What the aggregator of a run does, as the working memory of a step depends on it:
    ``corrects`` a weighted sum (variance correction) or ``combines_rows`` itself."""

    corrects: bool = False
    combines_rows: bool = False


@dataclass(frozen=True, eq=False)
class Train(PlanStep):
    """``nodes`` run their local optimizer: ``epochs`` passes over their data, or ``steps``
    mini-batches, either one number for all or one per node (an array aligned with ``nodes``).

    ``fresh_optimizer`` resets their optimizer state (SGD's momentum; Adam's moments and
    step count) first, as a client that builds a new optimizer every round does.
    ``transforms`` rewrite each local step's gradient, in order, before the optimizer
    takes it (FedProx's proximal term; with ``privacy=...``, DP-SGD's per-example clipping
    and noise first, put there by the engine).
    """

    nodes: np.ndarray
    epochs: int | np.ndarray | None = None
    steps: int | np.ndarray | None = None
    fresh_optimizer: bool = True
    transforms: tuple[GradientTransform, ...] = ()

    def messages(self, num_nodes: int) -> Messages:
        return NO_MESSAGES

    def training(self) -> Train:
        return self

    def working_rows(self, num_nodes: int, combining: Combining) -> int:
        """Training's memory is counted per chunk of nodes (fedsim.memory), not in rows."""
        return 0

    def slot_names(self) -> set[str]:
        """The per-row states its transforms keep."""
        return {name for transform in self.transforms for name in transform.slots}

    def only(self, chosen: np.ndarray) -> Train:
        """The same step for the nodes ``chosen`` (positions or a mask into ``nodes``)."""

        def pick(work: int | np.ndarray | None) -> int | np.ndarray | None:
            return work[chosen] if isinstance(work, np.ndarray) else work

        return replace(
            self, nodes=self.nodes[chosen], epochs=pick(self.epochs), steps=pick(self.steps)
        )

    @property
    def most_steps(self) -> int | None:
        """The largest per-node ``steps`` (None in epochs mode)."""
        return None if self.steps is None else int(np.max(self.steps, initial=0))

    @property
    def most_epochs(self) -> int | None:
        """The largest per-node ``epochs`` (None in steps mode)."""
        return None if self.epochs is None else int(np.max(self.epochs, initial=0))


@dataclass(frozen=True, eq=False)
class Gossip(PlanStep):
    """Every node takes its row of ``W @ X[:n]``: j sends its model to each i with W[i, j] != 0.

    With ``step_size`` (gamma) a node instead moves by ``gamma (W - I) S`` from its model,
    S the models as received (gamma = 1: the plain average).  With ``replicas`` every
    receiver holds a public replica of each sender's model (the per-row state
    ``"replica"``, zero at first): a sender sends the change from its replica, rewritten
    by the message transforms (compressed), every holder adds it, and the replicas are S
    (CHOCO-Gossip, Koloskova, Stich and Jaggi, ICML 2019).

    ``payload`` names what is mixed: the models (``"params"``) or a per-row state a
    strategy keeps beside them (gradient tracking's trackers), its messages counted as any
    gossip's; a state is mixed by plain W, without the message transforms or aggregator
    (both act on models), step size or replicas.
    """

    weights: sp.csr_array
    step_size: float | None = None
    replicas: bool = False
    payload: str = "params"

    def __post_init__(self) -> None:
        check(
            self.payload == "params" or (self.step_size is None and not self.replicas),
            f"a gossip of {self.payload!r} mixes it by plain W: no step_size or replicas",
        )

    def messages(self, num_nodes: int) -> Messages:
        """j sends to i for every non-zero W[i, j]; a row with a neighbour's weight combines."""
        coo = self.weights.tocoo()
        sent = coo.data != 0
        senders, receivers = coo.col[sent], coo.row[sent]
        combiners = np.unique(receivers[senders != receivers])
        models = np.bincount(receivers, minlength=self.weights.shape[0])[combiners]
        return _messages(senders, receivers, combiners, "d2d", models)

    def working_rows(self, num_nodes: int, combining: Combining) -> int:
        """Nothing for the product itself (it is written into the backend's spare buffer,
        ``SPARE_ROWS``, measured: no growth); more when the aggregator corrects, or every
        received model gathered when it combines them; the replicas' change and the step's
        difference besides."""
        replicas = REPLICA_ROWS * num_nodes if self.replicas or self.step_size else 0
        if self.payload != "params":  # a state: mixed by plain W
            return 0
        if combining.combines_rows:
            return COMBINE_ROWS * int(self.messages(num_nodes).fan_in.sum()) + num_nodes
        return combining.corrects * CORRECTED_GOSSIP_ROWS * num_nodes + replicas

    def mixing_matrices(self) -> tuple[sp.csr_array, ...]:
        return (self.weights,)

    def slot_names(self) -> set[str]:
        """The public replicas, when it keeps them, and the state it mixes if not the models."""
        return ({"replica"} if self.replicas else set()) | ({self.payload} - {"params"})


@dataclass(frozen=True, eq=False)
class Average(PlanStep):
    """Each source sends its row to each target; each target becomes ``sum_k w[k] X[sources[k]]``.

    A broadcast is an average with one source.  Weights sum to one (but for an update
    that accumulates).  ``payload`` names what is sent: the model (``"params"``) or a
    per-row state a strategy keeps beside it (SCAFFOLD's control variates), written into
    the targets' ``into`` (the same name unless given); the aggregator combines models
    only.  With ``update`` (a server optimizer) each target instead moves as the optimizer
    says from its current row and the average, with state the backend keeps (and
    checkpoints) under the slot's and the optimizer's names.

    With ``base`` (a per-row slot's name) the models travel relative to what each client
    started from, as in asynchronous FL where clients start from different server versions:
    a download's targets also keep the model they received in that slot, and an upload's
    sources send their update from it, the one target becoming its own row plus the
    weighted sum of the updates (the weights need not sum to one; a source of weight zero
    is sent and discarded, as an update too stale to use).

    ``side_bytes``: what each message carries besides the row (FedNova's local step count).
    """

    sources: np.ndarray
    targets: np.ndarray
    weights: np.ndarray
    update: ServerOptimizer | None = None
    payload: str = "params"
    into: str | None = None
    base: str | None = None
    side_bytes: int = 0

    @property
    def written(self) -> str:
        """The slot the targets' rows are written into."""
        return self.into or self.payload

    def messages(self, num_nodes: int) -> Messages:
        """Every source to every target; targets combine when there are several sources."""
        senders = np.repeat(self.sources, len(self.targets))
        receivers = np.tile(self.targets, len(self.sources))
        combiners = self.targets if len(self.sources) > 1 else np.empty(0)
        link, fan_in = self.link(num_nodes), len(self.sources)
        return _messages(senders, receivers, combiners, link, fan_in, self.side_bytes)

    def working_rows(self, num_nodes: int, combining: Combining) -> int:
        """The gathered sources and the average (and its corrected copy); an aggregator that
        combines the models works on them once per target."""
        if combining.combines_rows and self.payload == "params" and len(self.sources) > 1:
            return (COMBINE_ROWS * len(self.sources) + 2) * len(self.targets)
        return len(self.sources) + 1 + combining.corrects

    def slot_names(self) -> set[str]:
        """The per-row states it reads or writes besides the models."""
        return {self.payload, self.written, self.base or "params"} - {"params"}

    def uploads_updates(self, num_nodes: int) -> bool:
        """Whether its sources send their updates from their ``base`` (an upload with one)."""
        return self.base is not None and self.link(num_nodes) == "uplink"

    def link(self, num_nodes: int) -> str:
        if (self.sources >= num_nodes).all():
            return "downlink"
        if (self.targets >= num_nodes).all():
            return "uplink"
        return "d2d"


@dataclass(frozen=True, eq=False)
class Aggregate(PlanStep):
    """Several averages taken at once: every group reads the rows as they were before the step,
    then all write their targets (independent aggregators whose sources and targets overlap).
    Its messages carry the largest of the groups' ``side_bytes``."""

    groups: tuple[Average, ...]

    def messages(self, num_nodes: int) -> Messages:
        parts = [group.messages(num_nodes) for group in self.groups]
        senders, receivers, combiners, fan_in = (
            np.concatenate([getattr(part, name) for part in parts]) for name in FIELDS
        )
        side_bytes = max((part.side_bytes for part in parts), default=0)
        return Messages(senders, receivers, combiners, "d2d", fan_in, side_bytes)

    def working_rows(self, num_nodes: int, combining: Combining) -> int:
        """Every group's result, kept until all are written, and the widest gathering."""
        widest = max(len(group.sources) for group in self.groups)
        return sum(self.held_results(num_nodes, combining)) + widest

    def held_results(self, num_nodes: int, combining: Combining) -> list[int]:
        """Each group's rows but its gathered sources (freed once it is combined)."""
        return [
            group.working_rows(num_nodes, combining) - len(group.sources) for group in self.groups
        ]

    def slot_names(self) -> set[str]:
        return set().union(*(group.slot_names() for group in self.groups))


@dataclass(frozen=True, eq=False)
class Push(PlanStep):
    """Message k puts ``sources[k]``'s current row into ``targets[k]``'s buffer with weight
    ``weights[k]`` (1 for a plain mean, the sender's age for an age-weighted one)."""

    sources: np.ndarray
    targets: np.ndarray
    weights: np.ndarray
    fills_buffers: ClassVar[bool] = True

    def messages(self, num_nodes: int) -> Messages:
        """Buffered, so nobody combines yet (the :class:`Merge` does)."""
        return _messages(self.sources, self.targets, np.empty(0), "d2d")

    def working_rows(self, num_nodes: int, combining: Combining) -> int:
        """The pushed rows, gathered and weighted in place (and their variances taken)."""
        return (1 + combining.corrects) * len(self.sources)

    def slot_names(self) -> set[str]:
        return set()


@dataclass(frozen=True, eq=False)
class Merge(PlanStep):
    """Each of ``nodes`` becomes ``s X[i] + (1 - s) B[i]`` with ``s = self_weights[i]`` and
    ``B[i]`` the weighted mean of its buffer, which is then emptied."""

    nodes: np.ndarray
    self_weights: np.ndarray

    def messages(self, num_nodes: int) -> Messages:
        """Nothing sent (the pushes were); every node merges its buffer."""
        return _messages(np.empty(0), np.empty(0), self.nodes, None)

    def working_rows(self, num_nodes: int, combining: Combining) -> int:
        return (MERGE_ROWS + combining.corrects) * len(self.nodes)

    def slot_names(self) -> set[str]:
        return set()


Step = Train | Gossip | Average | Aggregate | Push | Merge
FIELDS = ("senders", "receivers", "combiners", "fan_in")


@dataclass(frozen=True, eq=False)
class Traffic:
    """What a protocol sent in one round, counted by the protocol itself.

    ``model_messages[i]`` is the number of model messages row i sent; ``control_bytes[kind][i]``
    the bytes of control traffic of that kind (piggybacked views, pings and pongs, membership
    advertisements) it sent; ``aggregations[i]`` how many averages row i computed.
    """

    model_messages: np.ndarray
    control_bytes: dict[str, np.ndarray]
    aggregations: np.ndarray


@dataclass(frozen=True, eq=False)
class RoundPlan:
    """The steps of one round, executed in order.

    Event-driven protocols (MoDeST, gossip learning) also give their own ``traffic`` and the
    simulated time ``finished_at`` at which the round completed; for other plans the engine
    derives both from the steps.  ``stalled`` says why a protocol can make no further
    progress (the run then stops after this plan).
    """

    steps: tuple[Step, ...]
    traffic: Traffic | None = None
    finished_at: float | None = None
    stalled: str | None = None
