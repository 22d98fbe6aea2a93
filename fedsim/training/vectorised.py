"""Local training of many nodes at once: ``torch.func`` vmap over the node axis."""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call, vmap

from fedsim.training.layout import ParameterLayout
from fedsim.training.optimizer import LocalOptimizer, OptimizerState
from fedsim.training.per_example import PerExampleGradients
from fedsim.training.schedule import Batches
from fedsim.training.transforms import Rewrite


class VectorisedTrainer:
    """Runs every node's local optimizer step as one batched computation.

    The forward pass is ``vmap`` of ``functional_call`` over the stacked (nodes, d)
    parameters, split into one leaf per named parameter; one reverse pass of the summed
    node losses then gives every node's gradient at once, since node k's loss depends on
    row k alone.  This is the same gradient as ``vmap(grad(loss))``, a little faster, and
    it avoids the second-long import that ``torch.func.grad`` triggers on first use.
    (Leaves per parameter, not slices of one flat leaf: a slice's backward writes a
    zero-filled (nodes, d) tensor per parameter, which cost half the pass.)  Each node's
    loss is the mean cross-entropy over the real examples of its mini-batch (padding slots
    weigh zero), so the result equals the per-node loop of
    :class:`fedsim.training.loop.LoopTrainer`.
    """

    def __init__(
        self, model: nn.Module, layout: ParameterLayout, optimizer: LocalOptimizer
    ) -> None:
        self.optimizer, self.layout = optimizer, layout
        self.per_example = PerExampleGradients(model, layout)

        def node_loss(
            named: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor
        ) -> torch.Tensor:
            logits = functional_call(model, named, (x,))
            # Cross-entropy spelled out: under vmap F.cross_entropy takes a slow decomposition.
            losses = -logits.log_softmax(dim=-1).gather(-1, y[:, None])[:, 0]
            return (losses * weight).sum() / weight.sum().clamp_min(1.0)

        self._losses = vmap(node_loss)
        self._gradients: torch.Tensor | None = None

    def losses(
        self, params: torch.Tensor, x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor
    ) -> torch.Tensor:
        """Each node's weighted mean loss on its batch, (nodes,)."""
        return self._losses(self.layout.unflatten(params), x, y, weight)

    def gradients(
        self,
        params: torch.Tensor,
        x: torch.Tensor,
        y: torch.Tensor,
        weight: torch.Tensor,
        out: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Each node's gradient, (nodes, d), of its weighted mean loss on its batch (written
        into ``out`` where given)."""
        with torch.enable_grad():
            leaves = {
                name: view.detach().requires_grad_()
                for name, view in self.layout.unflatten(params).items()
            }
            losses = self._losses(leaves, x, y, weight)
            grads = torch.autograd.grad(losses.sum(), tuple(leaves.values()))
        flat = torch.empty_like(params) if out is None else out
        for view, grad in zip(self.layout.unflatten(flat).values(), grads, strict=True):
            view.copy_(grad)
        return flat

    def _buffer(self, params: torch.Tensor) -> torch.Tensor:
        """A (nodes, d) gradient buffer kept between chunks and rounds: a fresh one per chunk
        cost more in page faults (a 10 MB tensor of 256 MLP rows) than its copy."""
        kept = self._gradients
        if kept is None or kept.shape[0] < len(params) or kept.device != params.device:
            kept = self._gradients = torch.empty_like(params)
        return kept[: len(params)]

    def train(
        self,
        params: torch.Tensor,
        state: OptimizerState | None,
        batches: Batches,
        train_x: torch.Tensor,
        train_y: torch.Tensor,
        rewrite: Rewrite | None = None,
        lr: torch.Tensor | None = None,
    ) -> None:
        """Train the (nodes, d) ``params`` and their optimizer ``state`` in place on
        ``batches``, at the (nodes, steps) float64 rates ``lr`` (``optimizer.lr`` for all by
        default); ``rewrite`` transforms every step's gradients (from per-example
        gradients, when its chain starts with a per-example transform)."""
        active, state = batches.active, {} if state is None else state
        if lr is None:
            lr = torch.full(
                active.shape, self.optimizer.lr, dtype=torch.float64, device=active.device
            )
        lr = lr.to(params.device)
        per_example = rewrite is not None and rewrite.per_example is not None
        zeroth_order = rewrite is not None and rewrite.zeroth_order is not None
        for step in range(batches.num_steps):
            if rewrite is None and _few(active[:, step]):
                rows = active[:, step].nonzero()[:, 0]
                self._step_of(rows, params, state, batches, step, lr, train_x, train_y)
                continue
            indices = batches.indices[:, step]
            x, y, weight = _rows(train_x, indices), _rows(train_y, indices), batches.mask[:, step]
            if zeroth_order:

                def loss_at(points: torch.Tensor) -> torch.Tensor:
                    with torch.no_grad():
                        return self.losses(points, x, y, weight)  # noqa: B023 (called now)

                grads = rewrite.estimate(params, loss_at, step)
            elif per_example:
                grads = rewrite.reduce(self.per_example(params, x, y), weight, step)
            elif rewrite is None:  # the optimizer reads the gradients once: a buffer reused
                grads = self.gradients(params, x, y, weight, out=self._buffer(params))
            else:
                grads = self.gradients(params, x, y, weight)
            if rewrite is not None:

                def gradient_at(points: torch.Tensor) -> torch.Tensor:
                    return self.gradients(points, x, y, weight)  # noqa: B023 (called now)

                grads = rewrite(grads, params, gradient_at=gradient_at)
            self.optimizer.step(params, grads, state, active[:, step], lr[:, step])

    def _step_of(
        self,
        rows: torch.Tensor,
        params: torch.Tensor,
        state: OptimizerState,
        batches: Batches,
        step: int,
        lr: torch.Tensor,
        train_x: torch.Tensor,
        train_y: torch.Tensor,
    ) -> None:
        """The plain ``step`` of the nodes ``rows`` alone, when few of the chunk's nodes take
        it (the last steps of nodes with more data than most): their rows and optimizer
        state gathered, stepped, written back."""
        stepped = params[rows]
        stepped_state = {name: value[rows] for name, value in state.items()}
        indices = batches.indices[rows, step]
        x, y, weight = _rows(train_x, indices), _rows(train_y, indices), batches.mask[rows, step]
        grads = self.gradients(stepped, x, y, weight, out=self._buffer(stepped))
        self.optimizer.step(
            stepped, grads, stepped_state, batches.active[rows, step], lr[rows, step]
        )
        params[rows] = stepped
        for name, value in stepped_state.items():
            state[name][rows] = value


FEW = 0.5
"""A plain step that fewer than this share of a chunk's nodes take trains those alone (a
digits-MLP node's gradient costs about 17 µs, gathering and writing back its row 2 µs); at
most half, their gathered rows and gradients take no more memory than a whole step's
gradients and buffer."""


def _few(active: torch.Tensor) -> bool:
    return int(active.sum()) < FEW * len(active)


def _rows(tensor: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """``tensor[indices]`` by ``index_select``: on CPU a tenth of advanced indexing's time
    for a chunk's (nodes, batch) examples."""
    return tensor.index_select(0, indices.reshape(-1)).view(*indices.shape, *tensor.shape[1:])
