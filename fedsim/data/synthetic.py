"""Synthetic(alpha, beta): per-user logistic models, the heterogeneous benchmark of FedProx."""

from __future__ import annotations

import numpy as np
import torch

from fedsim.data.datasets import Dataset
from fedsim.errors import check


def synthetic(
    alpha: float = 1.0,
    beta: float = 1.0,
    num_users: int = 100,
    dimension: int = 60,
    num_classes: int = 10,
    test_fraction: float = 0.2,
    data_seed: int = 0,
) -> Dataset:
    """Synthetic(alpha, beta) of Li et al. (2020), "Federated Optimization in Heterogeneous
    Networks" (FedProx), as generated for LEAF.

    Each user k draws ``u_k ~ N(0, alpha)``, a softmax model ``W_k`` (classes x dimension)
    and ``b_k`` with entries ``~ N(u_k, 1)``, ``B_k ~ N(0, beta)`` and a feature mean
    ``v_k ~ N(B_k, 1)``; its examples are ``x ~ N(v_k, Sigma)`` with diagonal
    ``Sigma_jj = j^(-1.2)`` and labels ``y = argmax(W_k x + b_k)``.  ``alpha`` controls how
    much the users' models differ, ``beta`` how much their inputs differ; as in the
    reference generator both are standard deviations.  A user holds
    ``floor(lognormal(4, 2)) + 50`` examples; each user's examples are split into train and
    test with ``test_fraction``.  The data depend on ``data_seed`` only, not on the run's
    seed.  ``train_owners`` is the user of each train example (for ``partition=natural``).
    """
    check(alpha >= 0, f"data.alpha={alpha} must be >= 0")
    check(beta >= 0, f"data.beta={beta} must be >= 0")
    check(num_users >= 1, f"data.num_users={num_users} must be an integer >= 1")
    check(dimension >= 1, f"data.dimension={dimension} must be an integer >= 1")
    check(num_classes >= 2, f"data.num_classes={num_classes} must be an integer >= 2")
    check(0 < test_fraction < 1, f"data.test_fraction={test_fraction} must lie in (0, 1)")
    check(data_seed >= 0, f"data.data_seed={data_seed} must be an integer >= 0")
    generator = np.random.default_rng(data_seed)
    sizes = generator.lognormal(4, 2, num_users).astype(np.int64) + 50
    model_means = generator.normal(0, alpha, num_users)
    input_means = generator.normal(
        generator.normal(0, beta, num_users)[:, None], 1, (num_users, dimension)
    )
    scales = np.arange(1, dimension + 1, dtype=np.float64) ** -0.6  # sqrt(j^-1.2)
    train: list[tuple[np.ndarray, np.ndarray]] = []
    test: list[tuple[np.ndarray, np.ndarray]] = []
    for user in range(num_users):
        weights = generator.normal(model_means[user], 1, (num_classes, dimension))
        bias = generator.normal(model_means[user], 1, num_classes)
        inputs = input_means[user] + scales * generator.standard_normal((sizes[user], dimension))
        labels = np.argmax(inputs @ weights.T + bias, axis=1)
        # At least one example on each side, so every user trains and is tested.
        num_test = min(max(round(test_fraction * sizes[user]), 1), sizes[user] - 1)
        train.append((inputs[num_test:], labels[num_test:]))
        test.append((inputs[:num_test], labels[:num_test]))
    return Dataset(
        name="synthetic",
        train_x=torch.as_tensor(np.concatenate([x for x, _ in train]), dtype=torch.float32),
        train_y=torch.as_tensor(np.concatenate([y for _, y in train]), dtype=torch.int64),
        test_x=torch.as_tensor(np.concatenate([x for x, _ in test]), dtype=torch.float32),
        test_y=torch.as_tensor(np.concatenate([y for _, y in test]), dtype=torch.int64),
        num_classes=num_classes,
        train_owners=np.repeat(np.arange(num_users), [len(y) for _, y in train]),
    )
