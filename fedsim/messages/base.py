"""Message transforms: what happens to a model message between its sender and its receivers.

A transform rewrites the rows a step sends (a Byzantine attacker forges its message, a
compressor encodes and decodes it), chained in the order the run gives them (attack, then
compression).  When the receiver already holds a reference of the sender's model (a client's
upload to the server whose model it downloaded), the transforms see the update
``sent - reference`` and the receiver gets ``reference + transformed``; in gossip they see the
model itself.  Each transform says which links it acts on, the per-row state it keeps
(``slots``, (rows, d) tensors the backend holds and checkpoints, such as an error-feedback
residual) and its wire size, which the byte counters and the simulated clock use.
Randomness is explicit: a pure function of (seed, round, sender, coordinate), so a sender's
message does not depend on who else sends in the same batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from fedsim import rng

if TYPE_CHECKING:
    import scipy.sparse as sp

    from fedsim.plans import RoundPlan

LINKS = ("uplink", "downlink", "d2d")
DOWNLOADED = "message/downloaded"  # what each client decoded of its last compressed download
STEP_SHIFT = 16  # a step's position keys its randomness above the streams (fedsim.rng)


@dataclass(eq=False)
class Outgoing:
    """The messages of one step, as a transform sees them.

    ``senders`` are the global rows whose messages ``values`` (k, d) holds, sent over
    ``link`` by step ``step`` (its position in the round's plan) of round ``round_idx`` of a
    run seeded ``seed`` with ``num_nodes`` nodes (rows from ``num_nodes`` on are servers).
    ``slots`` holds the senders' rows of every per-row state the transforms keep; a
    transform updates its own in place.  ``mixing`` is the step's mixing matrix in a gossip
    step (row i: the weights with which receiver i mixes the senders' models, by global
    node id), so that a transform knows who receives each message with what weight; None
    in every other step.
    """

    senders: np.ndarray
    link: str
    round_idx: int
    seed: int
    num_nodes: int
    slots: dict[str, torch.Tensor] = field(default_factory=dict)
    step: int = 0
    mixing: sp.csr_array | None = None

    def uniform(self, stream: int, dim: int, device: torch.device) -> torch.Tensor:
        """(k, dim) uniforms in [0, 1), row j a function of (seed, stream, round, step,
        sender j): a sender that sends in two steps of a round draws afresh."""
        counters = torch.arange(dim, device=device)
        senders = torch.as_tensor(self.senders, device=device)
        keyed = stream + (self.step << STEP_SHIFT)  # step 0: the stream itself
        return rng.uniform(self.seed, keyed, self.round_idx, senders, counters)

    def normal(self, stream: int, dim: int, device: torch.device) -> torch.Tensor:
        """(k, dim) standard normal values, row j a function of (seed, stream, round, sender j)
        (Box-Muller on two columns of :meth:`uniform`)."""
        pairs = self.uniform(stream, 2 * dim, device).view(len(self.senders), 2, dim)
        radius = torch.sqrt(-2.0 * torch.log1p(-pairs[:, 0]))  # 1 - u in (0, 1]: finite
        return radius * torch.cos(2 * torch.pi * pairs[:, 1])


class MessageTransform:
    """Rewrites the messages of the links it acts on; subclasses give :meth:`__call__`.

    ``slots`` are the names of the per-row states it keeps (each a (rows, d) tensor, zero
    until written), ``links`` the links it acts on.
    """

    slots: tuple[str, ...] = ()
    links: tuple[str, ...] = ("uplink", "d2d")

    def __call__(self, values: torch.Tensor, outgoing: Outgoing) -> torch.Tensor:
        """The messages the receivers get in place of ``values`` (k, d)."""
        raise NotImplementedError

    def wire_bytes(self, num_parameters: int) -> int | None:
        """Bytes of one encoded message of ``num_parameters`` values, without the header;
        None when the transform leaves the size as it was (an attack)."""
        return None

    def metrics(self) -> dict[str, float]:
        """What it measured of the messages since the last call (then reset)."""
        return {}

    def state(self) -> dict[str, Any]:
        """Its counters since the last :meth:`metrics`, as plain data (checkpointed)."""
        return {}

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from a :meth:`state`."""

    def prepare(self, num_nodes: int, seed: int) -> None:
        """Fix what is fixed for the run in a federation of ``num_nodes`` seeded ``seed``
        (an attack's Byzantine nodes); refuse, with one line, settings that do not fit."""

    def check_plan(self, plan: RoundPlan) -> None:
        """Refuse, with one line, a run whose round plan (the first) has no step of the kind
        it acts on (an attack that reads a gossip step's mixing weights)."""

    def byzantine_nodes(self) -> np.ndarray:
        """The nodes whose messages it forges (an attack's), left out of every metric."""
        return np.empty(0, np.int64)

    def slot(self, name: str) -> str:
        """The backend's name for this transform's state ``name``."""
        return f"message/{type(self).__name__}/{name}"


def none() -> None:
    """No transform: messages arrive as sent (the option ``none`` of every message group)."""
    return None


@dataclass(frozen=True, eq=False)
class MessageTransforms:
    """The run's chain of message transforms, in order; empty when every group is ``none``."""

    chain: tuple[MessageTransform, ...] = ()

    @classmethod
    def of(cls, transforms: Sequence[MessageTransform | None]) -> MessageTransforms:
        return cls(tuple(transform for transform in transforms if transform is not None))

    def __bool__(self) -> bool:
        return bool(self.chain)

    def on(self, link: str | None) -> tuple[MessageTransform, ...]:
        """The transforms acting on ``link``."""
        return tuple(transform for transform in self.chain if link in transform.links)

    def byzantine_nodes(self) -> np.ndarray:
        """The nodes some transform of the chain forges the messages of, sorted."""
        forging = [transform.byzantine_nodes() for transform in self.chain]
        return np.unique(np.concatenate([np.empty(0, np.int64), *forging]))

    def metrics(self) -> dict[str, float]:
        """Every transform's measurements since the last call (then reset)."""
        return {
            name: value for transform in self.chain for name, value in transform.metrics().items()
        }

    def state(self) -> list[dict[str, Any]]:
        return [transform.state() for transform in self.chain]

    def restore(self, state: list[dict[str, Any]]) -> None:
        for transform, saved in zip(self.chain, state, strict=True):
            transform.restore(saved)

    def slot_names(self, link: str | None = None) -> set[str]:
        """Every per-row state the chain (or its transforms on ``link``) keeps, by the
        backend's names."""
        links = LINKS if link is None else (link,)
        names = {held for one in links for _, held in self.state_names(one)}
        if self.on("downlink") and link in (None, "downlink"):
            names.add(DOWNLOADED)
        return names

    def state_names(self, link: str) -> list[tuple[str, str]]:
        """The states of the transforms on ``link``, as (the transform's name, the backend's
        name) pairs: on the downlink the server keeps its state for each client apart from
        the client's own uplink state in the same row."""
        suffix = "@downlink" if link == "downlink" else ""
        return [
            (transform.slot(name), transform.slot(name) + suffix)
            for transform in self.on(link)
            for name in transform.slots
        ]

    def wire_bytes(self, link: str, dense_bytes: int, num_parameters: int) -> int:
        """Bytes of one model message on ``link``: the last encoding's size plus the header
        (``dense_bytes`` less the dense values), or ``dense_bytes`` when nothing encodes."""
        size = dense_bytes
        header = dense_bytes - num_parameters * 4
        for transform in self.on(link):
            encoded = transform.wire_bytes(num_parameters)
            if encoded is not None:
                size = encoded + header
        return size

    def apply(
        self,
        sent: torch.Tensor,
        outgoing: Outgoing,
        reference: torch.Tensor | None = None,
        states: dict[str, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """What the receivers get of the rows ``sent`` (k, d): each transform on the link in
        turn, on the update from ``reference`` (what the receivers hold) where one is given.
        ``outgoing.slots`` holds the senders' rows of the states the transforms on the link
        keep (:meth:`slot_names`), and they update them there; or, given every row's
        ``states`` (by name, indexed by global row), the senders' rows are read from and
        written back to them."""
        chain = self.on(outgoing.link)
        if not chain:
            return sent
        names = self.state_names(outgoing.link)
        rows = torch.as_tensor(outgoing.senders, device=sent.device)
        if states is not None:
            outgoing.slots = {name: states[held][rows] for name, held in names}
        values = sent if reference is None else sent - reference
        for transform in chain:
            values = transform(values, outgoing)
        if states is not None:
            for name, held in names:
                states[held][rows] = outgoing.slots[name]
        return values if reference is None else reference + values
