"""Label flipping: Byzantine nodes train honestly on their examples relabelled C - 1 - y."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from fedsim.attacks.base import Attack
from fedsim.data.datasets import Dataset


class LabelFlip(Attack):
    """Data poisoning: a Byzantine node trains as an honest one, but on its own examples with
    each label ``y`` of ``C`` classes replaced by ``C - 1 - y``, and sends what it computed
    unchanged (so it acts on no link).  The EPFL code's ``LabelFlippingWorker``
    (``9 - label`` on ten classes; He, Karimireddy and Jaggi, 2022, arXiv 2202.01545);
    spec byzantine.md §1.  An example an honest node also holds keeps its label there: the
    attackers train on relabelled copies of those.
    """

    links: tuple[str, ...] = ()
    poisons_data = True

    def poison(
        self, dataset: Dataset, shards: list[np.ndarray]
    ) -> tuple[Dataset, list[np.ndarray]]:
        """``dataset`` with the Byzantine nodes' training labels flipped, and the shards that
        point them at the flipped examples; the test split is the same tensors."""
        if not len(self.byzantine):
            return dataset, shards
        total = len(dataset.train_y)
        honest = np.zeros(total, dtype=bool)
        for node in np.setdiff1d(np.arange(len(shards)), self.byzantine):
            honest[shards[node]] = True
        held = np.unique(np.concatenate([shards[node] for node in self.byzantine]))
        shared = held[honest[held]]  # sorted: a copy of each, at total + its rank here
        train_x, train_y, owners = dataset.train_x, dataset.train_y.clone(), dataset.train_owners
        shards = list(shards)
        if len(shared):
            copies = torch.as_tensor(shared)
            train_x = torch.cat([train_x, train_x[copies]])
            train_y = torch.cat([train_y, train_y[copies]])
            owners = None if owners is None else np.concatenate([owners, owners[shared]])
            for node in self.byzantine:
                shard = shards[node].copy()
                in_shared = honest[shard]
                shard[in_shared] = total + np.searchsorted(shared, shard[in_shared])
                shards[node] = np.sort(shard)
        flipped = torch.as_tensor(np.unique(np.concatenate([shards[n] for n in self.byzantine])))
        train_y[flipped] = dataset.num_classes - 1 - train_y[flipped]
        poisoned = replace(dataset, train_x=train_x, train_y=train_y, train_owners=owners)
        return poisoned, shards
