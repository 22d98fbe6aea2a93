"""Which examples each training node uses at each local step.

Each node reshuffles its own examples every epoch and walks through them in mini-batches
(the last one of an epoch may be smaller), exactly as a ``DataLoader(shuffle=True)`` over
its shard.  The shuffles come from :func:`fedsim.rng.uniform`, keyed by (seed, round, node,
epoch, position), so they do not depend on which other nodes are trained alongside.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch

from fedsim import rng

if TYPE_CHECKING:
    from fedsim.data.datasets import Dataset


class ExampleIndices(Protocol):
    """What local training reads of the nodes' data: :class:`NodeData`, or a population whose
    rows are derived on demand (:class:`fedsim.partitions.population.PopulationData`)."""

    counts: torch.Tensor  # (num_nodes,) examples per node, an integer tensor

    @property
    def width(self) -> int:
        """Columns of :meth:`indices`: at least the most examples any node holds, the same
        for every group of nodes (argsort orders tied shuffle keys differently at another
        width, so a per-group width would make a node's batches depend on its companions)."""
        ...

    @property
    def num_examples(self) -> np.ndarray:
        """Examples per node."""
        ...

    @property
    def nbytes(self) -> int:
        """Bytes the data hold in memory."""
        ...

    def indices(self, nodes: torch.Tensor) -> torch.Tensor:
        """The ``(len(nodes), width)`` train-set indices of ``nodes``: row k's first
        ``counts[nodes[k]]`` entries are node ``nodes[k]``'s examples, the rest padding (0)."""
        ...

    def to(self, device: torch.device | str) -> ExampleIndices:
        """The same data on ``device``."""
        ...

    def examples(self, dataset: Dataset, nodes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The inputs and labels that :meth:`indices` of ``nodes`` point into: the data set's
        train split, or the examples a population that generates its clients' data makes
        for ``nodes``."""
        ...


@dataclass(frozen=True)
class NodeData:
    """Every node's example indices, padded into one table.

    ``table[i, :counts[i]]`` are the train-set indices held by node i; the rest is padding.
    """

    table: torch.Tensor
    counts: torch.Tensor

    @classmethod
    def from_shards(cls, shards: list[np.ndarray], device: torch.device | str = "cpu") -> NodeData:
        """Pack one index array per node."""
        counts = np.array([len(shard) for shard in shards], dtype=np.int64)
        table = np.zeros((len(shards), max(1, int(counts.max(initial=0)))), dtype=np.int64)
        for node, shard in enumerate(shards):
            table[node, : len(shard)] = shard
        return cls(torch.as_tensor(table, device=device), torch.as_tensor(counts, device=device))

    @property
    def num_examples(self) -> np.ndarray:
        """Examples per node."""
        return self.counts.cpu().numpy()

    @property
    def width(self) -> int:
        """Columns of the table: the most examples a node holds (at least 1)."""
        return self.table.shape[1]

    @property
    def nbytes(self) -> int:
        """Bytes of the table and the counts."""
        return sum(t.nelement() * t.element_size() for t in (self.table, self.counts))

    def indices(self, nodes: torch.Tensor) -> torch.Tensor:
        """The table's rows of ``nodes``."""
        return self.table[nodes]

    def to(self, device: torch.device | str) -> NodeData:
        """The same table and counts on ``device``."""
        return type(self)(self.table.to(device), self.counts.to(device))

    def examples(self, dataset: Dataset, nodes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The data set's train split, which the indices point into."""
        return dataset.train_x, dataset.train_y


@dataclass(frozen=True)
class Batches:
    """Mini-batches of a group of nodes: ``indices[k, s]`` is node k's batch at local step s.

    ``mask[k, s, b]`` is 1.0 where slot b holds a real example and 0.0 where it is padding
    (short last batches, or steps past the node's own number of steps); real examples
    always fill a prefix of the batch.  ``active[k, s]`` says whether node k takes step s.
    """

    indices: torch.Tensor
    mask: torch.Tensor

    @property
    def active(self) -> torch.Tensor:
        return self.mask.sum(dim=-1) > 0

    @property
    def num_steps(self) -> int:
        return self.indices.shape[1]


def local_batches(
    data: ExampleIndices,
    nodes: torch.Tensor,
    *,
    seed: int,
    round_idx: int,
    batch_size: int,
    epochs: int | torch.Tensor | None = None,
    steps: int | torch.Tensor | None = None,
) -> Batches:
    """The mini-batches that ``nodes`` use in round ``round_idx``.

    Exactly one of ``epochs`` (passes over each node's data) and ``steps`` (a fixed number of
    mini-batch steps per node, reshuffling at each epoch boundary) is given: one number for
    all nodes, or a tensor of one per node.
    """
    counts = data.counts[nodes].to(torch.int64)
    steps_per_epoch = (counts + batch_size - 1) // batch_size
    if epochs is not None:
        total_steps = epochs * steps_per_epoch
    else:
        total_steps = torch.where(counts > 0, steps, 0)
    num_steps = int(total_steps.max()) if len(nodes) else 0
    epochs_needed = (
        int((total_steps / steps_per_epoch.clamp_min(1)).ceil().max()) if num_steps else 0
    )
    width = data.width

    position = torch.arange(width, device=nodes.device)
    epoch = torch.arange(epochs_needed, device=nodes.device)
    keys = rng.uniform(seed, rng.SHUFFLE, round_idx, nodes, (epoch[:, None] << 32) | position)
    keys = keys.masked_fill(position >= counts[:, None, None], float("inf"))
    order = keys.argsort(dim=-1)  # (nodes, epochs, width): a permutation of each node's examples

    step = torch.arange(num_steps, device=nodes.device)
    per_epoch = steps_per_epoch.clamp_min(1)[:, None]
    step_epoch, step_in_epoch = step // per_epoch, step % per_epoch  # (nodes, steps)
    slot = step_in_epoch[..., None] * batch_size + torch.arange(batch_size, device=nodes.device)
    valid = (slot < counts[:, None, None]) & (step < total_steps[:, None])[..., None]
    slot = slot.clamp(max=width - 1)
    epoch_order = order.gather(
        1, step_epoch.clamp(max=max(epochs_needed - 1, 0))[..., None].expand(-1, -1, width)
    )
    local = epoch_order.gather(2, slot)
    indices = data.indices(nodes)[:, None, :].expand(-1, num_steps, -1).gather(2, local)
    return Batches(indices=indices, mask=valid.to(torch.float32))


def samples_in_steps(examples: np.ndarray, steps: int, batch_size: int) -> np.ndarray:
    """Examples that ``steps`` mini-batches hold for nodes of ``examples`` examples, walking
    epochs as :func:`local_batches` does (the last batch of each epoch is short)."""
    examples = np.asarray(examples, dtype=np.float64)
    per_epoch = np.maximum(np.ceil(examples / batch_size), 1)
    epochs, extra = np.divmod(steps, per_epoch)
    return epochs * examples + np.minimum(extra * batch_size, examples)
