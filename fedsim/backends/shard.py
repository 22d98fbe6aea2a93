"""One Ray actor's share of the federation: its rows of the parameter tensor, trained and
mixed with the local backend's code; rows of other shards arrive as numpy arrays."""

from __future__ import annotations

import resource
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

import fedsim
from fedsim.aggregators import Aggregator
from fedsim.backends.local import LocalBackend
from fedsim.plans import Merge, Train
from fedsim.task import Task

if TYPE_CHECKING:
    import scipy.sparse as sp


class Shard:
    """The rows ``rows`` (global ids, sorted) of the federation, held by one actor."""

    def __init__(
        self, chunk_size: int | str | None, vectorise: bool | str, threads: int, rows: str = "all"
    ) -> None:
        torch.set_num_threads(threads)
        self.backend = LocalBackend(chunk_size=chunk_size, vectorise=vectorise, rows=rows)

    def start(
        self,
        task: Task,
        rows: np.ndarray,
        aggregator: Aggregator,
        device: str = "cpu",
        held: np.ndarray | None = None,
    ) -> None:
        """Hold ``rows`` with their initial models on ``device`` ("cuda" is the GPU that Ray
        gave this actor: it makes only that one visible); ``held`` as for
        :meth:`LocalBackend.start` (rows on demand where the strategy allows them)."""
        self.rows = rows
        self.backend.start(task.to(device), len(rows), aggregator, held=held, row_ids=rows)

    def package(self) -> str:
        """Where this actor imported fedsim from."""
        return package_directory()

    def local(self, rows: np.ndarray) -> np.ndarray:
        """Positions of global ``rows`` (all held here) in this shard."""
        return np.searchsorted(self.rows, rows)

    def get(self, rows: np.ndarray, slot: str = "params") -> np.ndarray:
        """Copies of global ``rows`` (of ``slot``) as a float32 array (what other shards
        receive)."""
        return self.backend.slot(slot)[self.backend.where(self.local(rows))].cpu().numpy()

    def train(self, nodes: np.ndarray, step: Train, round_idx: int) -> None:
        self.backend.train(replace(step, nodes=self.local(nodes)), round_idx)

    def gossip(
        self,
        weights: sp.csr_array,
        rows: np.ndarray,
        *foreign: np.ndarray,
        sent: tuple[np.ndarray, np.ndarray] | None = None,
        step_size: float | None = None,
        replicas: bool = False,
        payload: str = "params",
    ) -> None:
        """``X[rows] <- W @ [X[rows]; foreign]``: W's columns are ``rows`` (global ids held
        here), then the received rows of other shards.  With ``sent`` (global ids held here
        and what their messages became on the way) the rows receive those and keep their
        own models, the foreign rows arriving as rewritten; with ``replicas`` what the rows
        send is their replicas (already written here).  ``step_size`` as for
        :meth:`LocalBackend.mix`; a ``payload`` other than the parameters (a per-row
        state) is mixed by plain W."""
        index = self.backend.where(self.local(rows))
        own = self.backend.slot(payload)[index]
        received = [torch.from_numpy(part).to(own.device) for part in foreign]
        stacked, rewritten = torch.cat([own, *received]), None
        if payload != "params":
            mixed = self.backend.mix(weights, stacked, len(own), plain=True)
            self.backend.slot(payload)[index] = mixed
            return
        if replicas:
            rewritten = torch.cat([self.backend.slot("replica")[index], *received])
        elif sent is not None:
            ids, values = sent
            own_sent = own.clone()
            own_sent[torch.as_tensor(np.searchsorted(rows, ids))] = torch.from_numpy(values).to(
                own.device
            )
            rewritten = torch.cat([own_sent, *received])
        self.backend.params[index] = self.backend.mix(
            weights, stacked, len(own), rewritten, step_size
        )

    def partial_average(
        self, sources: np.ndarray, weights: np.ndarray, payload: str = "params"
    ) -> tuple[Any, Any]:
        """``sum_k w_k X[sources_k]`` (of ``payload``) over the sources held here, and the sum
        of their per-tensor variances (for a correcting aggregator, of models only)."""
        rows = self.backend.slot(payload)[self.backend.where(self.local(sources))]
        weighted = self.backend.weighted_sum(weights, rows).cpu().numpy()
        variances = None
        if self.backend.aggregator.corrects and payload == "params":
            layout = self.backend.task.layout
            variances = self.backend.aggregator.variances(rows, layout).sum(dim=0).cpu().numpy()
        return weighted, variances

    def write(self, targets: np.ndarray, row: np.ndarray, slot: str = "params") -> None:
        rows = self.backend.slot(slot)
        rows[self.backend.where(self.local(targets))] = torch.from_numpy(row).to(rows.device)

    def push(self, targets: np.ndarray, weights: np.ndarray, *parts: np.ndarray) -> None:
        """Buffer the pushed models (``parts`` concatenated, in message order) at ``targets``."""
        rows = torch.from_numpy(np.concatenate(parts)).to(self.backend.params.device)
        self.backend.buffer_rows(rows, self.local(targets), weights)

    def merge(self, nodes: np.ndarray, self_weights: np.ndarray) -> None:
        self.backend.merge(Merge(self.local(nodes), self_weights))

    def sums(self, rows: np.ndarray, shift: np.ndarray | None = None) -> tuple[np.ndarray, int]:
        held = self.backend.params[self.backend.where(self.local(rows))]
        if shift is not None:
            held -= torch.from_numpy(shift).to(held.device)  # held is a copy (indexed rows)
        return held.sum(dim=0).cpu().numpy(), len(held)

    def squared_distance(self, rows: np.ndarray, mean: np.ndarray) -> float:
        held = self.backend.params[self.backend.where(self.local(rows))]
        return float((held - torch.from_numpy(mean).to(held.device)).pow(2).sum())

    def admit(self, rows: np.ndarray) -> None:
        """With rows on demand: hold global ``rows`` (all of this shard's), releasing the
        rows neither used nor kept."""
        self.backend.admit(self.local(rows))

    def keep(self, nodes: np.ndarray | None) -> None:
        self.backend.keep(nodes)

    def held_nodes(self) -> np.ndarray | None:
        return self.backend.held_nodes()

    def all_finite(self) -> bool:
        return self.backend.all_finite()

    def correction_factors(self) -> tuple[np.ndarray, int]:
        return self.backend.correction_sums()

    def state(self) -> dict[str, Any]:
        """The rows' state, with the correction factors summed here since the last report."""
        return self.backend.state()

    def restore(self, state: dict[str, Any]) -> None:
        self.backend.restore(state)

    def peak_memory_mb(self) -> float:
        """This actor's peak resident memory."""
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def average_of(partials: list[tuple[Any, Any]]) -> tuple[np.ndarray, np.ndarray | None]:
    """The sum of the shards' partial weighted sums and variance sums."""
    weighted = sum(part[0] for part in partials)
    variances = [part[1] for part in partials if part[1] is not None]
    return weighted, (sum(variances) if variances else None)


def package_directory() -> str:
    """The directory of the fedsim package this process runs."""
    return str(Path(fedsim.__file__).resolve().parent)
