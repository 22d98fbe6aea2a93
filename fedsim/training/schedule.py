"""Which examples each training node uses at each local step.

Each node reshuffles its own examples every epoch and walks through them in mini-batches
(the last one of an epoch may be smaller), exactly as a ``DataLoader(shuffle=True)`` over
its shard.  The shuffles come from :func:`fedsim.rng.uniform`, keyed by (seed, round, node,
epoch, position), so they do not depend on which other nodes are trained alongside.
"""

from __future__ import annotations

from collections.abc import Sequence
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
class NodeData(Sequence):
    """Every node's example indices, one node after another (an offset index).

    Node i holds the train-set indices ``flat[offsets[i] : offsets[i] + counts[i]]``: 8
    bytes per example and 16 per node, however unequal the nodes (a padded table would take
    the largest node's size for each).  :meth:`indices` pads a group of nodes' rows to
    ``width``.  As a sequence it is the partition, one index array per node.
    """

    flat: torch.Tensor
    offsets: torch.Tensor
    counts: torch.Tensor
    width: int

    @classmethod
    def from_shards(
        cls, shards: Sequence[np.ndarray], device: torch.device | str = "cpu"
    ) -> NodeData:
        """Pack one index array per node (node data as they are)."""
        if isinstance(shards, NodeData):
            return shards.to(device)
        counts = np.array([len(shard) for shard in shards], dtype=np.int64)
        parts = [np.asarray(shard, dtype=np.int64) for shard in shards]
        return cls.from_offsets(np.concatenate(parts or [np.empty(0, np.int64)]), counts, device)

    @classmethod
    def from_offsets(
        cls, flat: np.ndarray, counts: np.ndarray, device: torch.device | str = "cpu"
    ) -> NodeData:
        """Node data from every node's indices one after another, ``counts`` per node."""
        counts = np.asarray(counts, dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        flat = np.concatenate([np.asarray(flat, dtype=np.int64), [0]])  # never empty
        width = max(1, int(counts.max(initial=0)))
        tensors = (torch.as_tensor(array, device=device) for array in (flat, offsets, counts))
        return cls(*tensors, width)

    @property
    def num_examples(self) -> np.ndarray:
        """Examples per node."""
        return self.counts.cpu().numpy()

    @property
    def nbytes(self) -> int:
        """Bytes of the indices, the offsets and the counts."""
        tensors = (self.flat, self.offsets, self.counts)
        return sum(t.nelement() * t.element_size() for t in tensors)

    @property
    def table(self) -> torch.Tensor:
        """Every node's row of :meth:`indices` (the padded table, made when asked)."""
        return self.indices(torch.arange(len(self.counts), device=self.counts.device))

    def indices(self, nodes: torch.Tensor) -> torch.Tensor:
        """The ``(len(nodes), width)`` rows of ``nodes``: their indices, then zeros."""
        column = torch.arange(self.width, device=self.flat.device)
        positions = self.offsets[nodes][:, None] + column
        held = column < self.counts[nodes][:, None]
        return self.flat[positions.clamp_(max=len(self.flat) - 1)].masked_fill_(~held, 0)

    def to(self, device: torch.device | str) -> NodeData:
        """The same data on ``device``."""
        flat, offsets, counts = (t.to(device) for t in (self.flat, self.offsets, self.counts))
        return type(self)(flat, offsets, counts, self.width)

    def examples(self, dataset: Dataset, nodes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The data set's train split, which the indices point into."""
        return dataset.train_x, dataset.train_y

    def __len__(self) -> int:
        return len(self.counts)

    def __getitem__(self, node: int) -> np.ndarray:  # type: ignore[override]
        """Node ``node``'s sorted indices."""
        if not 0 <= node < len(self):
            raise IndexError(node)
        start = int(self.offsets[node])
        return self.flat[start : start + int(self.counts[node])].cpu().numpy()


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
    # each step's slots in its epoch's permutation, without a (nodes, steps, width) copy
    epoch_start = step_epoch.clamp(max=max(epochs_needed - 1, 0))[..., None] * width
    local = order.flatten(1).gather(1, (epoch_start + slot).flatten(1)).view(slot.shape)
    indices = data.indices(nodes)[:, None, :].expand(-1, num_steps, -1).gather(2, local)
    return Batches(indices=indices, mask=valid.to(torch.float32))


def samples_in_steps(examples: np.ndarray, steps: int, batch_size: int) -> np.ndarray:
    """Examples that ``steps`` mini-batches hold for nodes of ``examples`` examples, walking
    epochs as :func:`local_batches` does (the last batch of each epoch is short)."""
    examples = np.asarray(examples, dtype=np.float64)
    per_epoch = np.maximum(np.ceil(examples / batch_size), 1)
    epochs, extra = np.divmod(steps, per_epoch)
    return epochs * examples + np.minimum(extra * batch_size, examples)
