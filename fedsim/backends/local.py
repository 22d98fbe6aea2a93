"""The local backend: the whole federation as one (rows, d) tensor in this process."""

from __future__ import annotations

import warnings

import numpy as np
import scipy.sparse as sp
import torch

from fedsim.errors import check
from fedsim.plans import Aggregate, Average, Gossip, RoundPlan, Step, Train
from fedsim.task import Task
from fedsim.training.loop import LoopTrainer
from fedsim.training.schedule import local_batches
from fedsim.training.vectorised import VectorisedTrainer

MIXING_CACHE = 64  # mixing matrices kept on the device (more than any period in use)


class LocalBackend:
    """Executes round plans on stacked parameters ``params`` of shape (nodes + servers, d).

    Parameters
    ----------
    chunk_size:
        Nodes trained together in one vectorised call; bounds memory.
    vectorise:
        ``"auto"`` (vmap unless the model is convolutional on CPU), ``True`` or ``False``
        (the plain per-node loop).
    """

    def __init__(self, chunk_size: int | str = 256, vectorise: bool | str = "auto") -> None:
        check(
            chunk_size == "auto" or (isinstance(chunk_size, int) and chunk_size >= 1),
            f"backend.chunk_size={chunk_size!r} must be an integer >= 1 or auto",
        )
        check(
            vectorise in (True, False, "auto"),
            f"backend.vectorise={vectorise!r} is not one of: auto, true, false",
        )
        self.chunk_size, self.vectorise = chunk_size, vectorise

    def start(self, task: Task, num_rows: int) -> None:
        """Give every row the task's initial model and set up the trainer."""
        self.task = task
        self.params = task.initial_rows(num_rows)
        self.momentum = torch.zeros_like(self.params) if task.optimizer.momentum else None
        vectorise = task.prefers_vectorised() if self.vectorise == "auto" else self.vectorise
        self.trainer = (
            self._trainer(task)
            if vectorise
            else LoopTrainer(task.model, task.layout, task.optimizer)
        )
        self._mixing: dict[int, tuple[sp.csr_array, torch.Tensor]] = {}

    def _trainer(self, task: Task) -> VectorisedTrainer | LoopTrainer:
        """The vectorised trainer, or the loop with a warning if vmap cannot run this model."""
        trainer = VectorisedTrainer(task.model, task.layout, task.optimizer)
        x, y = task.dataset.train_x[:1], task.dataset.train_y[:1]
        try:
            trainer.gradients(self.params[:1], x[None], y[None], torch.ones(1, 1, device=x.device))
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
        for step in plan.steps:
            self._execute(step, round_idx)

    def _execute(self, step: Step, round_idx: int) -> None:
        if isinstance(step, Train):
            self._train(step, round_idx)
        elif isinstance(step, Gossip):
            num_nodes = step.weights.shape[0]
            self.params[:num_nodes] = torch.sparse.mm(
                self._sparse(step.weights), self.params[:num_nodes]
            )
        elif isinstance(step, Average):
            self._write(step, self._average(step))
        elif isinstance(step, Aggregate):
            averages = [self._average(group) for group in step.groups]
            for group, average in zip(step.groups, averages, strict=True):
                self._write(group, average)
        else:
            raise TypeError(f"unknown plan step {step!r}")

    def _average(self, step: Average) -> torch.Tensor:
        weights = torch.as_tensor(step.weights, dtype=self.params.dtype, device=self.params.device)
        return weights @ self.params[torch.as_tensor(step.sources, device=self.params.device)]

    def _write(self, step: Average, average: torch.Tensor) -> None:
        self.params[torch.as_tensor(step.targets, device=self.params.device)] = average

    def _train(self, step: Train, round_idx: int) -> None:
        task, optimizer = self.task, self.task.optimizer
        nodes = torch.as_tensor(step.nodes, dtype=torch.int64, device=self.params.device)
        size = len(nodes) if self.chunk_size == "auto" else self.chunk_size
        for chunk in nodes.split(max(1, size)):
            params = self.params[chunk]
            momentum = None
            if self.momentum is not None:
                momentum = (
                    torch.zeros_like(params) if step.fresh_optimizer else self.momentum[chunk]
                )
            batches = local_batches(
                task.node_data,
                chunk,
                seed=task.seed,
                round_idx=round_idx,
                batch_size=optimizer.batch_size,
                epochs=step.epochs,
                steps=step.steps,
            )
            self.trainer.train(
                params, momentum, batches, task.dataset.train_x, task.dataset.train_y
            )
            self.params[chunk] = params
            if self.momentum is not None:
                self.momentum[chunk] = momentum

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
            self._mixing[key] = (weights, matrix.coalesce().to(self.params.device))
        return self._mixing[key][1]

    def rows(self, rows: np.ndarray | slice) -> torch.Tensor:
        """A copy of the given rows of the parameter tensor."""
        return self.params[rows].clone()

    def node_mean(self, num_nodes: int) -> torch.Tensor:
        """The average of the node rows (the consensus model)."""
        return self.params[:num_nodes].mean(dim=0)

    def consensus_distance(self, num_nodes: int) -> float:
        """Mean squared distance of the node models to their average."""
        nodes = self.params[:num_nodes]
        return float((nodes - nodes.mean(dim=0)).pow(2).sum(dim=1).mean())
