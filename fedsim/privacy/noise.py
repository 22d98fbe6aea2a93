"""The noise of one private step, drawn the way the nodes themselves would draw it.

CorN-DSGD spec section 7 (Rodio et al. 2025; DECOR, Allouah et al. 2024): with
``R = s I + c L + F F^T``, node i adds ``sqrt(s) z_i`` from a seed only it knows, ``+-sqrt(c)
xi_ij`` for each edge (i, j) from a seed only i and j share (+ for the smaller id), and
``F[i] @ xi`` from one seed all nodes share.  Across nodes these have covariance exactly R,
independently for every coordinate, round and local step, and the pairwise parts cancel in
the network sum.  Since every term is keyed by (seed, round, step, who shares it), a node's
noise is the same whichever chunk, shard or backend computes it, and the simulation shows
who must know what.  ``sampler="central"`` instead draws all nodes at once as ``F_R Z``
with ``F_R F_R^T = R`` (the original simulator's statistically equivalent shortcut).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch

from fedsim import rng
from fedsim.privacy.covariance import NoiseCovariance
from fedsim.training.transforms import PerExampleTransform

SAMPLERS = ("shared_seeds", "central")
PRIVATE, PAIRWISE, SHARED, CENTRAL = range(4)  # who holds the seed of a noise term


@dataclass(frozen=True, eq=False)
class NoisyStep(PerExampleTransform):
    """DP-SGD's step (Abadi et al., CCS 2016) as CorN-DSGD applies it (spec section 3), a
    gradient transform: ``(sum_s clip_C(g_s) + n_i) / B``, with ``clip_C(g) = g min(1, C /
    ||g||)`` over all parameters jointly and the noise added to the *sum* before the
    division by the batch size B; the noise has the covariance across nodes of the round's
    mechanism, drawn from the run's seed by ``sampler``."""

    clip: float
    covariance: NoiseCovariance
    seed: int
    batch_size: int
    sampler: str = "shared_seeds"

    def reduce(
        self,
        per_example: torch.Tensor,
        weight: torch.Tensor,
        nodes: torch.Tensor,
        round_idx: int,
        step: int,
    ) -> torch.Tensor:
        norms = per_example.norm(dim=-1)
        factors = (self.clip / norms.clamp_min(torch.finfo(norms.dtype).tiny)).clamp(max=1.0)
        sums = torch.einsum("nb,nbd->nd", factors * weight, per_example)
        dim, device = per_example.shape[-1], per_example.device
        noise = self.draw(nodes, round_idx, step, dim, device).to(sums.dtype)
        return (sums + noise) / self.batch_size

    def draw(
        self,
        nodes: torch.Tensor,
        round_idx: int,
        step: int,
        dim: int,
        device: torch.device | str = "cpu",
    ) -> torch.Tensor:
        """The (len(nodes), dim) float64 noise that ``nodes`` (global ids) add to their
        clipped-gradient sums at local step ``step`` of round ``round_idx``."""
        nodes = np.asarray(torch.as_tensor(nodes).cpu(), dtype=np.int64)
        key = (self.seed, rng.PRIVACY, round_idx, step)
        if self.sampler == "central":
            everyone = _normal((*key, CENTRAL), (self.covariance.num_nodes, dim), device)
            return _rows_times(self._factor[nodes].to(device), everyone)
        return _shared_seeds(self.covariance, nodes, key, dim, device)

    @cached_property
    def _factor(self) -> torch.Tensor:
        """F with F F^T = R, from R's eigendecomposition (R may be singular)."""
        values, vectors = np.linalg.eigh(self.covariance.matrix())
        return torch.from_numpy(vectors * np.sqrt(values.clip(min=0)))


def _shared_seeds(
    covariance: NoiseCovariance, nodes: np.ndarray, key: tuple, dim: int, device
) -> torch.Tensor:
    noise = torch.zeros(len(nodes), dim, dtype=torch.float64, device=device)
    if covariance.independent > 0:
        scale = covariance.independent**0.5
        for position, node in enumerate(nodes.tolist()):
            noise[position] = _normal((*key, PRIVATE, node), (dim,), device) * scale
    if covariance.pair_variance > 0 and len(covariance.edges):
        scale = covariance.pair_variance**0.5
        position = {node: index for index, node in enumerate(nodes.tolist())}
        edges = covariance.edges
        touching = np.isin(edges[:, 0], nodes) | np.isin(edges[:, 1], nodes)
        for low, high in edges[touching].tolist():
            shared = _normal((*key, PAIRWISE, low, high), (dim,), device) * scale
            if low in position:
                noise[position[low]] += shared
            if high in position:
                noise[position[high]] -= shared
    if covariance.dense is not None:
        shared = _normal((*key, SHARED), (covariance.dense.shape[1], dim), device)
        noise += _rows_times(torch.as_tensor(covariance.dense[nodes], device=device), shared)
    return noise


def _rows_times(rows: torch.Tensor, shared: torch.Tensor) -> torch.Tensor:
    """``rows @ shared``, summed over the shared draws one at a time in a fixed order, so that
    each node's row has the same bits whatever other rows are computed with it.  (A matrix
    product picks its kernel and its blocking of the sum from the shapes: one row and five
    rows then differ in their last bits on some CPUs.)"""
    result = torch.zeros(rows.shape[0], shared.shape[1], dtype=shared.dtype, device=shared.device)
    for column, draw in zip(rows.T, shared, strict=True):
        result += column[:, None] * draw  # two correctly rounded operations, never fused
    return result


def _normal(coordinates: tuple, shape: tuple[int, ...], device) -> torch.Tensor:
    """Standard normal float64 values determined by ``coordinates`` alone (a seed's stream)."""
    seed = int(rng.generator(*coordinates).integers(1 << 62))
    generator = torch.Generator(device=device).manual_seed(seed)
    return torch.randn(shape, generator=generator, dtype=torch.float64, device=device)
