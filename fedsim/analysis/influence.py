"""DICE: the influence of one node's training batch on the test loss, as it cascades over the
gossip graph of a D-PSGD run (Zhu, Li, Wang and He, "DICE: Data Influence Cascade in
Decentralized Learning", ICLR 2025, arXiv 2507.06931; spec seed-wave-2.md section 7).

The run analysed is fedsim's D-PSGD in its default order, adapt-then-combine, with one plain
SGD step per round (:class:`fedsim.strategies.dpsgd.DPSGD` with ``local_steps=1`` and
``optimizer.momentum=0``)::

    theta^{t+1}_k = sum_i W^t_{k,i} (theta^t_i - lr * g_i^t),   g_i^t = grad L(theta^t_i; z_i^t)

``W^t[k, i]`` is the weight node k gives to i's model (fedsim's mixing matrices, read as the
paper's ``W_{k_s, k_{s-1}}``: k_s receives from k_{s-1}).  **Update convention**: the
optimizer's update of batch z_j^t is ``lr * g_j`` (the official code multiplies the learning
rate by the raw gradient; the project page's ``Delta_j = O_j(theta, z) - theta`` beside a
leading ``eta`` would count the learning rate twice).

Signs: an influence is the change of the (``weights``-weighted) test loss caused by using
the batch; negative means the batch lowered the test loss (helpful), positive harmful.

- DICE-GT is a counterfactual replay: the same batches and mixing matrices, except that
  node j makes no update with batch z_j^t (the official code's "merge without update").
- DICE-E is its first-order estimate.  :func:`one_hop_estimate` is the official code's
  ``compute_estimation``; :func:`cascade_estimate` is the r-hop estimator of the project
  page, evaluated with Hessian-vector products (H is never formed).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from fedsim.data.datasets import Dataset
from fedsim.errors import check
from fedsim.topology.base import Topology
from fedsim.training.layout import ParameterLayout
from fedsim.training.schedule import NodeData, local_batches

LossFn = Callable[[torch.Tensor, Any], torch.Tensor]  # (flat parameters (d,), batch) -> scalar


@dataclass(frozen=True, eq=False)
class DecentralizedRun:
    """A D-PSGD run (adapt-then-combine, one SGD step per round) to analyse or replay.

    Parameters
    ----------
    loss
        ``loss(params, batch)``: the mean loss of a batch at flat parameters ``params``; the
        test set is passed to it as one more batch.
    batches
        ``batches[step][node]``: the batch node ``node`` trains on at ``step``.
    mixing
        ``mixing[step]``: the dense (n, n) mixing matrix W^step, ``W[k, i]`` the weight node
        k gives to node i's model.
    lr
        The SGD learning rate (constant).
    """

    loss: LossFn
    batches: Sequence[Sequence[Any]]
    mixing: Sequence[torch.Tensor]
    lr: float

    def __post_init__(self) -> None:
        check(self.lr > 0, f"lr={self.lr} must be > 0")
        check(len(self.mixing) >= 1, "mixing must hold at least one step's matrix")
        check(
            len(self.batches) == len(self.mixing),
            f"batches cover {len(self.batches)} steps but mixing {len(self.mixing)}",
        )
        n = self.num_nodes
        for step, (weights, batches) in enumerate(zip(self.mixing, self.batches, strict=True)):
            check(weights.shape == (n, n), f"mixing[{step}] has shape {tuple(weights.shape)}")
            check(len(batches) == n, f"batches[{step}] has {len(batches)} nodes, mixing {n}")

    @property
    def num_nodes(self) -> int:
        return int(self.mixing[0].shape[0])

    @property
    def num_steps(self) -> int:
        return len(self.mixing)

    def gradient(self, params: torch.Tensor, batch: Any) -> torch.Tensor:
        """The gradient of ``loss`` on ``batch`` at ``params``, shape (d,)."""
        with torch.enable_grad():
            leaf = params.detach().requires_grad_()
            (gradient,) = torch.autograd.grad(self.loss(leaf, batch), leaf)
        return gradient

    def trajectory(
        self,
        initial: torch.Tensor,
        start: int = 0,
        steps: int | None = None,
        unused: tuple[int, int] | None = None,
    ) -> torch.Tensor:
        """Every node's model after each step: row s is theta^{start+s}, shape (steps+1, n, d).

        ``unused=(node, step)`` replays the counterfactual run in which ``node`` makes no
        update with its batch of ``step`` (it still sends its model and mixes).
        """
        steps = self.num_steps - start if steps is None else steps
        check(
            start >= 0 and start + steps <= self.num_steps,
            f"steps {start}..{start + steps} outside the run's 0..{self.num_steps}",
        )
        rows, params = [initial], initial
        for step in range(start, start + steps):
            grads = torch.stack(
                [self.gradient(params[k], self.batches[step][k]) for k in range(self.num_nodes)]
            )
            if unused is not None and unused[1] == step:
                grads[unused[0]] = 0.0
            params = self.mixing[step] @ (params - self.lr * grads)
            rows.append(params)
        return torch.stack(rows)


def one_hop_estimate(
    run: DecentralizedRun,
    trajectory: torch.Tensor,
    test: Any,
    node: int,
    step: int,
    weights: torch.Tensor | None = None,
) -> float:
    """One-hop DICE-E of batch z_j^t (j = ``node``, t = ``step``), as the official code's
    ``compute_estimation`` writes it (q = ``weights``, all ones there)::

        lr * ( - q_j g'_j . g_j  -  sum_{k != j, W^t_kj != 0} q_k W^t_kj g'_k . g_j )

    g_j is the gradient of the batch at theta_j^t; g'_j the test gradient at theta_j^t, before
    the step (the code's ``grads_before_choosebatch``; the spec's "after its step" misreads
    it); g'_k the test gradient at neighbour k after the merge, theta_k^{t+1}.
    ``trajectory`` is ``run.trajectory(initial)``.
    """
    q = _checked(run, trajectory, node, step, 1, weights)
    start = trajectory[step, node]
    batch_gradient = run.gradient(start, run.batches[step][node])
    total = -q[node] * run.gradient(start, test) @ batch_gradient
    for k in receivers(run.mixing[step], node):
        test_gradient = run.gradient(trajectory[step + 1, k], test)
        total = total - q[k] * run.mixing[step][k, node] * test_gradient @ batch_gradient
    return float(run.lr * total)


def one_hop_ground_truth(
    run: DecentralizedRun,
    trajectory: torch.Tensor,
    test: Any,
    node: int,
    step: int,
    weights: torch.Tensor | None = None,
) -> float:
    """One-hop DICE-GT as the official code measures it: node j's test-loss change from its
    own step (before merging) plus each receiving neighbour's change after the merge, each
    against the counterfactual replay without batch z_j^t."""
    table = cascade_ground_truth(run, trajectory, test, node, step, 1, weights)
    return float(table[0, node] + sum(table[1, k] for k in receivers(run.mixing[step], node)))


def cascade_estimate(
    run: DecentralizedRun,
    trajectory: torch.Tensor,
    test: Any,
    node: int,
    step: int,
    hops: int,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """r-hop DICE-E per hop and node, shape (hops+1, n); its sum is the project page's
    I_E^(r) (walks may stay at a node: W_kk counts as an edge)::

        E[rho, k] = - lr q_k grad L(theta_k^{t+rho}; z')^T v_k^rho
        v^0 = e_j g_j,  v^1 = W^t v^0,  v^rho_m = sum_k W^{t+rho-1}_{m,k} (I - lr H_k) v_k^{rho-1}

    with H_k = H(theta_k^{t+rho-1}; z_k^{t+rho-1}), applied as a Hessian-vector product.
    Row 0 uses the test gradient at theta_j^t (as the one-hop code).  Expanding the
    recursion gives the page's sum over walks (k_1, ..., k_rho) of the W products times
    prod (I - lr H); each curvature factor sits at the node that holds the perturbation
    while it trains, k_s at step t+s for s = 1..rho-1 (the page's own definition of H; its
    displayed product index, k_s at t+s-1 for s = 2..rho, is shifted by one).
    """
    q = _checked(run, trajectory, node, step, hops, weights)
    table = torch.zeros(hops + 1, run.num_nodes, dtype=trajectory.dtype)
    start = trajectory[step, node]
    carried = torch.zeros_like(trajectory[step])
    carried[node] = run.gradient(start, run.batches[step][node])
    table[0, node] = -run.lr * q[node] * run.gradient(start, test) @ carried[node]
    for hop in range(1, hops + 1):
        if hop > 1:
            carried = _through_curvature(run, trajectory[step + hop - 1], step + hop - 1, carried)
        carried = run.mixing[step + hop - 1] @ carried
        for k in _holding(carried):
            test_gradient = run.gradient(trajectory[step + hop, k], test)
            table[hop, k] = -run.lr * q[k] * test_gradient @ carried[k]
    return table


def cascade_ground_truth(
    run: DecentralizedRun,
    trajectory: torch.Tensor,
    test: Any,
    node: int,
    step: int,
    hops: int,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """r-hop DICE-GT per hop and node, shape (hops+1, n): ``q_k (L(theta_k^{t+rho}; z') -
    L(theta_k^{t+rho, without z_j^t}; z'))`` from a counterfactual replay; row 0 holds node j's
    change from its own step alone, ``L(theta_j^t - lr g_j) - L(theta_j^t)``."""
    q = _checked(run, trajectory, node, step, hops, weights)
    table = torch.zeros(hops + 1, run.num_nodes, dtype=trajectory.dtype)
    start = trajectory[step, node]
    moved = start - run.lr * run.gradient(start, run.batches[step][node])
    table[0, node] = q[node] * (run.loss(moved, test) - run.loss(start, test))
    without = run.trajectory(trajectory[step], start=step, steps=hops, unused=(node, step))
    for hop in range(1, hops + 1):
        for k in range(run.num_nodes):
            actual, counterfactual = trajectory[step + hop, k], without[hop, k]
            table[hop, k] = q[k] * (run.loss(actual, test) - run.loss(counterfactual, test))
    return table


def receivers(mixing: torch.Tensor, node: int) -> list[int]:
    """The nodes k != ``node`` that give ``node``'s model a non-zero weight W[k, node]."""
    return [k for k in torch.nonzero(mixing[:, node]).flatten().tolist() if k != node]


def hessian_vector_product(
    loss: LossFn, params: torch.Tensor, batch: Any, vector: torch.Tensor
) -> torch.Tensor:
    """H(params; batch) @ vector as the gradient of ``grad L . vector`` (Pearlmutter's
    double backward), without forming H.  (``torch.autograd`` rather than ``torch.func``,
    whose first use imports the compiler for seconds.)"""
    with torch.enable_grad():
        leaf = params.detach().requires_grad_()
        (gradient,) = torch.autograd.grad(loss(leaf, batch), leaf, create_graph=True)
        (product,) = torch.autograd.grad(gradient @ vector, leaf)
    return product


def _through_curvature(
    run: DecentralizedRun, params: torch.Tensor, step: int, carried: torch.Tensor
) -> torch.Tensor:
    """Each row k of ``carried`` times (I - lr H(params_k; z_k^step)): the linearised SGD step."""
    moved = carried.clone()
    for k in _holding(carried):
        curvature = hessian_vector_product(run.loss, params[k], run.batches[step][k], carried[k])
        moved[k] = carried[k] - run.lr * curvature
    return moved


def _holding(carried: torch.Tensor) -> list[int]:
    return torch.nonzero(carried.abs().sum(dim=1)).flatten().tolist()


def _checked(
    run: DecentralizedRun,
    trajectory: torch.Tensor,
    node: int,
    step: int,
    hops: int,
    weights: torch.Tensor | None,
) -> torch.Tensor:
    n = run.num_nodes
    check(0 <= node < n, f"node={node} must be a node id in 0..{n - 1}")
    check(hops >= 0, f"hops={hops} must be >= 0")
    last = trajectory.shape[0] - 1
    check(
        step >= 0 and step + hops <= min(last, run.num_steps),
        f"step={step} with hops={hops} needs models up to step {step + hops}; "
        f"the trajectory ends at step {last}",
    )
    if weights is None:
        return torch.ones(n, dtype=trajectory.dtype)
    check(weights.shape == (n,), f"weights has shape {tuple(weights.shape)}, expected ({n},)")
    return weights


def classification_loss(model: nn.Module) -> LossFn:
    """Mean cross-entropy of ``model`` (a fedsim model, e.g. ``fedsim.models.logreg``) on a
    batch ``(x, y)``, at flat parameters laid out by :class:`ParameterLayout`."""
    layout = ParameterLayout.of(model)

    def loss(params: torch.Tensor, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(functional_call(model, layout.unflatten(params), (x,)), y)

    return loss


def mixing_matrices(
    topology: Topology, num_steps: int, dtype: torch.dtype = torch.float64
) -> list[torch.Tensor]:
    """W^t of each step as a dense tensor, from a fedsim :class:`Topology`."""
    return [
        torch.as_tensor(topology.mixing(step).toarray(), dtype=dtype) for step in range(num_steps)
    ]


def node_batches(
    dataset: Dataset,
    shards: list[np.ndarray],
    *,
    seed: int,
    num_steps: int,
    batch_size: int,
    dtype: torch.dtype = torch.float64,
) -> list[list[tuple[torch.Tensor, torch.Tensor]]]:
    """``batches[step][node]``: the batch D-PSGD with one local step per round draws at round
    ``step`` (fedsim's :func:`local_batches`, keyed by seed, round and node)."""
    data = NodeData.from_shards(shards)
    nodes = torch.arange(len(shards))
    batches = []
    for step in range(num_steps):
        drawn = local_batches(
            data, nodes, seed=seed, round_idx=step, batch_size=batch_size, steps=1
        )
        rows = []
        for k in range(len(shards)):
            indices = drawn.indices[k, 0][drawn.mask[k, 0] > 0]
            rows.append((dataset.train_x[indices].to(dtype), dataset.train_y[indices]))
        batches.append(rows)
    return batches
