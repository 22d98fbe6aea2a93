"""A population of LEAF Synthetic(alpha, beta) users, each generated on demand.

``data=synthetic`` makes ``num_users`` users of the Synthetic(alpha, beta) generator of Li et
al. (2020), "Federated Optimization in Heterogeneous Networks" (FedProx), as LEAF (Caldas et
al. 2018) generates them, all at once.  ``partition=population_synthetic`` makes each of the
``num_nodes`` clients (10^7 if need be) a user of the same generator, drawn only when a cohort
trains: its model and feature means from ``(seed, user)``, its examples from ``(seed, user,
position)``, with the counter-based :func:`fedsim.rng.uniform` and Box-Muller normals.  A user
does not depend on the users it is generated with, and a cohort costs O(its examples), not
O(N); the population holds one int32 size per client.

The global test set is the data set's own test split: ``data=synthetic``'s users, other
draws of the same generator (same alpha, beta, dimension, classes), so it is a sample of the
population's distribution, as LEAF's test users are of its training users.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
import torch

from fedsim import rng
from fedsim.errors import ConfigError, check
from fedsim.partitions.population import (
    LOGNORMAL,
    PopulationData,
    check_sizes,
    client_sizes,
    is_count,
)

if TYPE_CHECKING:
    from fedsim.data.datasets import Dataset

# Keys of fedsim.rng.uniform (its round slot, stream PARTITION) that keep a user's draws apart
# (clear of fedsim.partitions.population's, though the two never meet in one run).
_MODEL_MEAN, _INPUT_SHIFT, _INPUT_MEAN, _WEIGHTS, _BIAS, _INPUTS = range(16, 22)
_BLOCK_VALUES = 1 << 22  # float64 values of the per-example models gathered at once (32 MiB)


@dataclass(frozen=True)
class UserModels:
    """Users' draws, float64: ``model_means`` u_k and ``input_shifts`` B_k ``(users,)``,
    ``weights`` W_k ``(users, classes, dimension)``, ``bias`` b_k ``(users, classes)`` and
    ``input_means`` v_k ``(users, dimension)``."""

    model_means: torch.Tensor
    input_shifts: torch.Tensor
    weights: torch.Tensor
    bias: torch.Tensor
    input_means: torch.Tensor


@dataclass(frozen=True)
class SyntheticUsers:
    """LEAF's Synthetic(alpha, beta) rule per user k: ``u_k ~ N(0, alpha)``, ``W_k, b_k ~
    N(u_k, 1)``, ``B_k ~ N(0, beta)``, ``v_k ~ N(B_k, 1)``; example ``x ~ N(v_k, Sigma)`` with
    ``Sigma_jj = j^(-1.2)`` and ``y = argmax(W_k x + b_k)`` (alpha and beta standard
    deviations, as in :func:`fedsim.data.synthetic.synthetic`)."""

    alpha: float
    beta: float
    dimension: int
    num_classes: int

    def models(self, seed: int, users: torch.Tensor) -> UserModels:
        """The draws of ``users`` (int64 ids), each from ``(seed, user)`` alone."""
        classes, dimension = self.num_classes, self.dimension
        model_means = self.alpha * _normals(seed, _MODEL_MEAN, users, 1)[:, 0]
        input_shifts = self.beta * _normals(seed, _INPUT_SHIFT, users, 1)[:, 0]
        weights = _normals(seed, _WEIGHTS, users, classes * dimension)
        return UserModels(
            model_means,
            input_shifts,
            model_means[:, None, None] + weights.view(-1, classes, dimension),
            model_means[:, None] + _normals(seed, _BIAS, users, classes),
            input_shifts[:, None] + _normals(seed, _INPUT_MEAN, users, dimension),
        )

    def examples(
        self, seed: int, users: torch.Tensor, counts: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Examples ``0 .. counts[k] - 1`` of each of ``users``, user after user: float32
        inputs ``(counts.sum(), dimension)`` and int64 labels; example j of user k from
        ``(seed, k, j)`` and k's draws alone."""
        models = self.models(seed, users)
        owner = torch.repeat_interleave(torch.arange(len(users), device=users.device), counts)
        position = torch.arange(len(owner), device=users.device)
        position -= (counts.cumsum(0) - counts)[owner]
        feature = torch.arange(1, self.dimension + 1, device=users.device, dtype=torch.float64)
        scales = feature**-0.6  # sqrt(j^-1.2)
        inputs = torch.empty(len(owner), self.dimension, device=users.device)
        labels = torch.empty(len(owner), dtype=torch.int64, device=users.device)
        block_rows = max(1, _BLOCK_VALUES // (self.num_classes * self.dimension))
        for start in range(0, len(owner), block_rows):
            rows = slice(start, start + block_rows)
            held = owner[rows]
            keys = (users[held] << 32) | position[rows]
            block = models.input_means[held] + scales * _normals(
                seed, _INPUTS, keys, self.dimension
            )
            logits = (models.weights[held] * block[:, None, :]).sum(dim=2) + models.bias[held]
            inputs[rows], labels[rows] = block, logits.argmax(dim=1)
        return inputs, labels


@dataclass(frozen=True, eq=False)
class SyntheticPopulation(PopulationData):
    """Clients that are LEAF Synthetic users, their examples generated per cohort.

    ``counts`` holds each user's train examples (int32); :meth:`indices` points row k into
    the buffer that :meth:`examples` generates for the same ``nodes`` (user ``nodes[k]``'s
    train examples at ``counts[:k].sum() + j``), so a chunk costs its own examples only.
    ``width`` is the most train examples of any user of the population (see
    :class:`~fedsim.training.schedule.ExampleIndices`).  A user's examples ``0 ..
    counts - 1`` are its train part; the rest of its size, its test part, is never made.
    """

    scheme: SyntheticUsers  # type: ignore[assignment]  # generates; draws no base-set indices

    @property
    def nbytes(self) -> int:
        """Bytes of the sizes."""
        return self.counts.nelement() * self.counts.element_size()

    def indices(self, nodes: torch.Tensor) -> torch.Tensor:
        """The ``(len(nodes), width)`` positions of ``nodes``' examples in the buffer of
        :meth:`examples` for the same ``nodes``, zero-padded past each user's count."""
        counts = self._counts(nodes)
        position = torch.arange(self.width, device=counts.device)
        rows = (counts.cumsum(0) - counts)[:, None] + position
        return rows.masked_fill_(position >= counts[:, None], 0)

    def examples(self, dataset: Dataset, nodes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The train examples of ``nodes``, generated now, user after user (``dataset``, the
        global test set's source, is not read)."""
        nodes = torch.as_tensor(nodes, dtype=torch.int64, device=self.counts.device)
        return self.scheme.examples(self.seed, nodes, self._counts(nodes))

    def to(self, device: torch.device | str) -> SyntheticPopulation:
        """The same population with its sizes on ``device``."""
        return replace(self, counts=self.counts.to(device))

    def _counts(self, nodes: torch.Tensor) -> torch.Tensor:
        nodes = torch.as_tensor(nodes, dtype=torch.int64, device=self.counts.device)
        return self.counts[nodes].to(torch.int64)


def population_synthetic(
    labels: np.ndarray,
    num_nodes: int,
    seed: int,
    alpha: float | None = None,
    beta: float | None = None,
    dimension: int | None = None,
    num_classes: int | None = None,
    test_fraction: float | None = None,
    examples_per_client: int | str = LOGNORMAL,
    max_examples_per_client: int | None = None,
) -> SyntheticPopulation:
    """``num_nodes`` LEAF Synthetic(alpha, beta) users generated on demand from ``(seed,
    user)`` (see :class:`SyntheticPopulation`); ``labels`` (``data``'s) are not read.

    ``alpha``, ``beta``, ``dimension``, ``num_classes`` and ``test_fraction`` are those of
    ``data=synthetic`` (the YAML reads them from ``data``; None: the data set is not
    Synthetic).  A user's size is LEAF's ``floor(lognormal(4, 2)) + 50`` (or
    ``examples_per_client``), capped at ``max_examples_per_client``, drawn for all users at
    once; its train part is what :func:`fedsim.data.synthetic.synthetic` trains on, the size
    less ``min(max(round(test_fraction x size), 1), size - 1)`` test examples.
    """
    if (
        alpha is None
        or beta is None
        or dimension is None
        or num_classes is None
        or (test_fraction is None)
    ):
        raise ConfigError(
            "partition=population_synthetic generates users of data=synthetic and reads "
            "data.alpha, beta, dimension, num_classes and test_fraction: use data=synthetic"
        )
    check(alpha >= 0, f"partition.alpha={alpha} must be >= 0")
    check(beta >= 0, f"partition.beta={beta} must be >= 0")
    check(is_count(dimension), f"partition.dimension={dimension} must be an integer >= 1")
    check(
        is_count(num_classes) and num_classes >= 2,
        f"partition.num_classes={num_classes} must be an integer >= 2",
    )
    check(0 < test_fraction < 1, f"partition.test_fraction={test_fraction} must lie in (0, 1)")
    check_sizes(examples_per_client, max_examples_per_client)
    check(num_nodes >= 1, f"num_nodes={num_nodes} must be >= 1")
    sizes = client_sizes(num_nodes, seed, examples_per_client, max_examples_per_client)
    counts = train_counts(sizes, test_fraction)
    users = SyntheticUsers(float(alpha), float(beta), dimension, num_classes)
    return SyntheticPopulation(torch.as_tensor(counts), int(counts.max()), seed, users)


def train_counts(sizes: np.ndarray, test_fraction: float) -> np.ndarray:
    """Train examples (int32) of users of ``sizes``: the size less its test part, as
    :func:`fedsim.data.synthetic.synthetic` splits (one test example at least, while the user
    keeps one to train on)."""
    sizes = sizes.astype(np.int64)
    num_test = np.minimum(np.maximum(np.round(test_fraction * sizes), 1), sizes - 1)
    return (sizes - num_test).astype(np.int32)


def _normals(seed: int, purpose: int, keys: torch.Tensor, count: int) -> torch.Tensor:
    """``(len(keys), count)`` float64 standard normals, entry ``[k, j]`` from ``(seed,
    purpose, keys[k], j)`` alone: Box-Muller on pairs of counter-based uniforms, both of a
    pair's outputs used (24-bit uniforms: the tails end at 5.8 standard deviations)."""
    pairs = (count + 1) // 2
    counters = torch.arange(2 * pairs, device=keys.device)
    uniforms = rng.uniform(seed, rng.PARTITION, purpose, keys, counters).to(torch.float64)
    radius = torch.sqrt(-2 * torch.log1p(-uniforms[:, 0::2]))
    angle = 2 * math.pi * uniforms[:, 1::2]
    normals = torch.stack([radius * torch.cos(angle), radius * torch.sin(angle)], dim=2)
    return normals.view(len(keys), 2 * pairs)[:, :count]
