"""Populations of clients whose data are derived on demand, never materialised.

Cross-device federated learning samples a few hundred clients a round from populations of
10^5-10^7.  A :class:`PopulationData` keeps one int32 size per client (4 bytes per client)
and the base data set's examples grouped by class; client ``i``'s example indices are drawn
only when asked for, from ``(seed, i)`` and the position, with the counter-based
:func:`fedsim.rng.uniform`.  So a client's examples do not depend on which other clients are
asked with it or in what order, and a cohort costs O(cohort x width), not O(N).

Every client draws its examples *with replacement* from a base data set (the train split of
``data``, digits' 1,437 examples by default): examples repeat within a client and across
clients, and a population of 10^7 clients is a resampling of the base set whose clients
differ in size and in label mix.  The three schemes are the label skews of the materialised
partitioners: IID, per-client Dirichlet class proportions and k classes per client.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Protocol, overload

import numpy as np
import torch

from fedsim import rng
from fedsim.errors import check

if TYPE_CHECKING:
    from fedsim.data.datasets import Dataset

LOGNORMAL = "lognormal"
# Keys of fedsim.rng.uniform (its round slot) that keep a client's draws apart.
_EXAMPLE, _CLASS, _CLASS_CHOICE, _RADIUS, _ANGLE, _ACCEPT, _BOOST = range(7)
_GAMMA_TRIES = 12  # Marsaglia-Tsang accepts >= 95% per try: all 12 rejected < 3e-16
_SIZE_CHUNK = 1 << 20  # sizes drawn in chunks: O(chunk) transient memory at any N
_ROW_BUDGET = 1 << 22  # index entries per chunk when a population is materialised
_INT32_MAX = (1 << 31) - 1


@dataclass(frozen=True, eq=False)
class BaseSet:
    """The base data set's examples grouped by class: class ``c``'s are
    ``by_class[starts[c] : starts[c] + sizes[c]]`` (classes: the distinct labels, sorted)."""

    by_class: torch.Tensor
    starts: torch.Tensor
    sizes: torch.Tensor

    @classmethod
    def of(cls, labels: np.ndarray) -> BaseSet:
        _, class_of_example = np.unique(np.asarray(labels), return_inverse=True)
        sizes = np.bincount(class_of_example.ravel())
        return cls(
            torch.as_tensor(np.argsort(class_of_example.ravel(), kind="stable")),
            torch.as_tensor(np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)),
            torch.as_tensor(sizes.astype(np.int64)),
        )

    @property
    def num_classes(self) -> int:
        return len(self.sizes)

    @property
    def prior(self) -> torch.Tensor:
        """Each class's share of the base set (float64)."""
        return self.sizes.to(torch.float64) / self.sizes.sum()

    @property
    def nbytes(self) -> int:
        tensors = (self.by_class, self.starts, self.sizes)
        return sum(t.nelement() * t.element_size() for t in tensors)

    def pick(self, seed: int, nodes: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """One example drawn uniformly from class ``classes[k, j]`` for every client and
        position (24-bit uniforms: an example's chance is off by at most size / 2^24)."""
        draws = _uniforms(seed, _EXAMPLE, nodes, classes.shape[1])
        offsets = (draws * self.sizes[classes]).to(torch.int64)
        return self.by_class[self.starts[classes] + offsets]

    def to(self, device: torch.device | str) -> BaseSet:
        return BaseSet(self.by_class.to(device), self.starts.to(device), self.sizes.to(device))


class Scheme(Protocol):
    """How a client's examples are drawn from the base set."""

    base: BaseSet

    def draw(self, seed: int, nodes: torch.Tensor, width: int) -> torch.Tensor:
        """The ``(len(nodes), width)`` base-set indices at positions ``0 .. width - 1``."""
        ...


@dataclass(frozen=True, eq=False)
class UniformDraws:
    """Each example uniformly from the whole base set (IID clients)."""

    base: BaseSet

    def draw(self, seed: int, nodes: torch.Tensor, width: int) -> torch.Tensor:
        size = len(self.base.by_class)
        return (_uniforms(seed, _EXAMPLE, nodes, width) * size).to(torch.int64)


@dataclass(frozen=True, eq=False)
class ClassesPerClient:
    """Each client holds ``classes_per_client`` distinct classes, a uniformly random subset;
    position ``j`` draws from its ``j mod k``-th class, so the classes' counts differ by at most
    one and a client of at least k examples holds exactly k classes (NIID-Bench's #C=k, Li,
    Diao, Chen and He 2022, "Federated Learning on Non-IID Data Silos", with replacement)."""

    base: BaseSet
    classes_per_client: int

    def draw(self, seed: int, nodes: torch.Tensor, width: int) -> torch.Tensor:
        classes = torch.arange(self.base.num_classes, device=nodes.device)
        keys = rng.uniform(seed, rng.PARTITION, _CLASS_CHOICE, nodes, classes)
        held = keys.argsort(dim=1)[:, : self.classes_per_client]
        position = torch.arange(width, device=nodes.device)
        return self.base.pick(seed, nodes, held[:, position % self.classes_per_client])


@dataclass(frozen=True, eq=False)
class DirichletPerClient:
    """Each client draws class proportions ``q_i ~ Dir(alpha * p)`` (``p`` the base set's class
    prior), then the class of each example from ``q_i`` and the example from that class: the
    per-client convention of Hsu, Qi and Brown (2019), "Measuring the Effects of Non-Identical
    Data Distribution for Federated Visual Classification", with replacement."""

    base: BaseSet
    alpha: float

    def proportions(self, seed: int, nodes: torch.Tensor) -> torch.Tensor:
        """The ``(len(nodes), C)`` float64 class proportions of ``nodes``."""
        shapes = self.alpha * self.base.prior.to(nodes.device)
        return torch.softmax(_log_gamma(seed, nodes, shapes), dim=1)

    def draw(self, seed: int, nodes: torch.Tensor, width: int) -> torch.Tensor:
        cumulative = self.proportions(seed, nodes).cumsum(dim=1)
        draws = _uniforms(seed, _CLASS, nodes, width)
        classes = torch.searchsorted(cumulative, draws, right=True)
        return self.base.pick(seed, nodes, classes.clamp_(max=self.base.num_classes - 1))


@dataclass(frozen=True, eq=False)
class PopulationData(Sequence):
    """A population's example indices, derived per client on demand (the interface of
    :class:`fedsim.training.schedule.NodeData`).

    Holds ``counts``, one int32 size per client (4 bytes per client), and the base set
    grouped by class (8 bytes per base example); ``width`` is the most examples a client
    holds (at least 1), the columns of :meth:`indices`, so that a client's mini-batches are
    those of the materialised table bit for bit.  As a sequence it is the partition as a
    list of sorted index arrays, one per client, each derived when read.
    """

    counts: torch.Tensor
    width: int
    seed: int
    scheme: UniformDraws | ClassesPerClient | DirichletPerClient

    @property
    def num_examples(self) -> np.ndarray:
        """Examples per client (int32)."""
        return self.counts.cpu().numpy()

    @property
    def nbytes(self) -> int:
        """Bytes of the sizes and the base set's class index."""
        return self.counts.nelement() * self.counts.element_size() + self.scheme.base.nbytes

    def indices(self, nodes: torch.Tensor) -> torch.Tensor:
        """The ``(len(nodes), width)`` sorted base-set indices of ``nodes``, zero-padded past
        each client's size; O(len(nodes) x width) time and memory, whatever the population."""
        nodes = torch.as_tensor(nodes, dtype=torch.int64, device=self.counts.device)
        counts = self.counts[nodes].to(torch.int64)
        drawn = self.scheme.draw(self.seed, nodes, self.width)
        padding = torch.arange(self.width, device=nodes.device) >= counts[:, None]
        drawn = drawn.masked_fill(padding, torch.iinfo(torch.int64).max).sort(dim=1).values
        return drawn.masked_fill_(padding, 0)

    def to(self, device: torch.device | str) -> PopulationData:
        """The same population with its sizes and base set on ``device``."""
        base = self.scheme.base.to(device)
        return replace(self, counts=self.counts.to(device), scheme=replace(self.scheme, base=base))

    def examples(self, dataset: Dataset, nodes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The base set (the data set's train split), which the indices point into."""
        return dataset.train_x, dataset.train_y

    def materialise(self) -> list[np.ndarray]:
        """One sorted int64 index array per client, as a materialised partitioner returns."""
        return list(self)

    def __len__(self) -> int:
        return len(self.counts)

    @overload
    def __getitem__(self, node: int) -> np.ndarray: ...

    @overload
    def __getitem__(self, node: slice) -> list[np.ndarray]: ...

    def __getitem__(self, node: int | slice) -> np.ndarray | list[np.ndarray]:
        if isinstance(node, slice):
            return [self[k] for k in range(*node.indices(len(self)))]
        if not -len(self) <= node < len(self):
            raise IndexError(f"client {node} of a population of {len(self)}")
        row = self.indices(torch.tensor([node % len(self)]))[0]
        return row[: int(self.counts[node])].cpu().numpy()

    def __iter__(self) -> Iterator[np.ndarray]:
        chunk = max(1, _ROW_BUDGET // self.width)
        for start in range(0, len(self), chunk):
            nodes = torch.arange(start, min(start + chunk, len(self)))
            rows = self.indices(nodes).cpu().numpy()
            for row, count in zip(rows, self.counts[nodes].tolist(), strict=True):
                yield row[:count].copy()


def population_iid(
    labels: np.ndarray,
    num_nodes: int,
    seed: int,
    examples_per_client: int | str = 20,
    max_examples_per_client: int | None = None,
) -> PopulationData:
    """A population of ``num_nodes`` IID clients, each drawing its examples uniformly (with
    replacement) from the base set; sizes as :func:`client_sizes` draws them."""
    check_sizes(examples_per_client, max_examples_per_client)
    base = _base_set(labels, "population_iid")
    return _population(num_nodes, seed, examples_per_client, max_examples_per_client, base,
                       UniformDraws(base))  # fmt: skip


def population_dirichlet(
    labels: np.ndarray,
    num_nodes: int,
    seed: int,
    alpha: float = 0.5,
    examples_per_client: int | str = 20,
    max_examples_per_client: int | None = None,
) -> PopulationData:
    """A population whose clients draw class proportions ``q_i ~ Dir(alpha * p)`` (see
    :class:`DirichletPerClient`): small ``alpha`` gives each client few classes, large
    ``alpha`` the base set's prior."""
    check(alpha > 0, f"partition.alpha={alpha} must be > 0")
    check_sizes(examples_per_client, max_examples_per_client)
    base = _base_set(labels, "population_dirichlet")
    return _population(num_nodes, seed, examples_per_client, max_examples_per_client, base,
                       DirichletPerClient(base, float(alpha)))  # fmt: skip


def population_classes(
    labels: np.ndarray,
    num_nodes: int,
    seed: int,
    classes_per_client: int = 2,
    examples_per_client: int | str = 20,
    max_examples_per_client: int | None = None,
) -> PopulationData:
    """A population whose clients each hold ``classes_per_client`` classes drawn uniformly
    (see :class:`ClassesPerClient`)."""
    check_sizes(examples_per_client, max_examples_per_client)
    base = _base_set(labels, "population_classes")
    check(
        is_count(classes_per_client, base.num_classes),
        f"partition.classes_per_client={classes_per_client} must be an integer between 1 and "
        f"the {base.num_classes} classes of the training data",
    )
    return _population(num_nodes, seed, examples_per_client, max_examples_per_client, base,
                       ClassesPerClient(base, classes_per_client))  # fmt: skip


def client_sizes(
    num_nodes: int,
    seed: int,
    examples_per_client: int | str,
    max_examples_per_client: int | None = None,
) -> np.ndarray:
    """Every client's number of examples (int32), drawn for all clients at once.

    An integer gives every client that many; ``"lognormal"`` draws LEAF's Synthetic sizes
    (Caldas et al. 2018, "LEAF: A Benchmark for Federated Settings"; the rule of
    :func:`fedsim.data.synthetic.synthetic`), ``floor(lognormal(4, 2)) + 50``, a heavy tail:
    the largest of 10^7 clients holds ~10^6, so ``max_examples_per_client`` may cap them.
    """
    cap = min(max_examples_per_client or _INT32_MAX, _INT32_MAX)
    if examples_per_client != LOGNORMAL:
        return np.full(num_nodes, min(int(examples_per_client), cap), dtype=np.int32)
    generator = rng.generator(seed, rng.PARTITION)
    sizes = np.empty(num_nodes, dtype=np.int32)
    for start in range(0, num_nodes, _SIZE_CHUNK):
        drawn = generator.lognormal(4, 2, min(_SIZE_CHUNK, num_nodes - start))
        sizes[start : start + len(drawn)] = np.minimum(np.floor(drawn) + 50, cap)
    return sizes


def _population(
    num_nodes: int,
    seed: int,
    examples_per_client: int | str,
    max_examples_per_client: int | None,
    base: BaseSet,
    scheme: UniformDraws | ClassesPerClient | DirichletPerClient,
) -> PopulationData:
    check(num_nodes >= 1, f"num_nodes={num_nodes} must be >= 1")
    sizes = client_sizes(num_nodes, seed, examples_per_client, max_examples_per_client)
    return PopulationData(torch.as_tensor(sizes), max(1, int(sizes.max())), seed, scheme)


def check_sizes(examples_per_client: int | str, max_examples_per_client: int | None) -> None:
    """``partition.examples_per_client`` and ``partition.max_examples_per_client`` are legal."""
    check(
        examples_per_client == LOGNORMAL or is_count(examples_per_client, _INT32_MAX),
        f"partition.examples_per_client={examples_per_client!r} is not one of: an integer "
        f"from 1 to {_INT32_MAX}, {LOGNORMAL}",
    )
    check(
        max_examples_per_client is None or is_count(max_examples_per_client),
        f"partition.max_examples_per_client={max_examples_per_client!r} must be an integer "
        ">= 1 or null (no cap)",
    )


def is_count(value: object, most: float = math.inf) -> bool:
    """Whether ``value`` is an integer (not a bool) from 1 to ``most``."""
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= most


def _base_set(labels: np.ndarray, name: str) -> BaseSet:
    check(len(labels) > 0, f"partition={name} needs a base data set with training examples")
    return BaseSet.of(labels)


def _uniforms(seed: int, purpose: int, nodes: torch.Tensor, width: int) -> torch.Tensor:
    """``(len(nodes), width)`` float64 uniforms in [0, 1), one per client and position."""
    positions = torch.arange(width, device=nodes.device)
    return rng.uniform(seed, rng.PARTITION, purpose, nodes, positions).to(torch.float64)


def _log_gamma(seed: int, nodes: torch.Tensor, shapes: torch.Tensor) -> torch.Tensor:
    """``(len(nodes), len(shapes))`` logs of Gamma(shape, 1) draws, from counter-based uniforms.

    Marsaglia and Tsang (2000), "A Simple Method for Generating Gamma Variables": for shape
    ``a + 1 >= 1``, ``d = a + 2/3``, ``c = 1 / sqrt(9 d)``, a normal ``x`` (Box-Muller) and
    ``v = (1 + c x)^3`` are accepted when ``v > 0`` and ``log U < x^2 / 2 + d - d v + d log v``,
    giving ``d v``; the first accepted of ``_GAMMA_TRIES`` tries is taken.  Their boost
    ``Gamma(a) = Gamma(a + 1) U^(1/a)`` is applied in logs, so that tiny shapes (small alpha)
    do not underflow.
    """
    tries = torch.arange(len(shapes) * _GAMMA_TRIES, device=nodes.device)
    tries = tries.view(len(shapes), _GAMMA_TRIES)
    radius, angle, accept = (
        rng.uniform(seed, rng.PARTITION, purpose, nodes, tries).to(torch.float64)
        for purpose in (_RADIUS, _ANGLE, _ACCEPT)
    )
    normal = torch.sqrt(-2 * torch.log1p(-radius)) * torch.cos(2 * math.pi * angle)
    d = (shapes + 2 / 3)[:, None]
    v = (1 + normal / torch.sqrt(9 * d)) ** 3
    log_v = torch.log(v.clamp_min(torch.finfo(torch.float64).tiny))
    accepted = (v > 0) & (torch.log1p(-accept) < normal**2 / 2 + d - d * v + d * log_v)
    first = accepted.to(torch.uint8).argmax(dim=2, keepdim=True)
    log_shifted = torch.log(d[:, 0]) + log_v.gather(2, first)[..., 0]
    classes = torch.arange(len(shapes), device=nodes.device)
    boost = rng.uniform(seed, rng.PARTITION, _BOOST, nodes, classes).to(torch.float64)
    return log_shifted + torch.log1p(-boost) / shapes
