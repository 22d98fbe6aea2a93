"""Partitioners: which training examples each node holds.

A partitioner is a function ``name(labels, num_nodes, seed, **settings)`` returning one
sorted int64 index array per node, with randomness only from
``fedsim.rng.generator(seed, fedsim.rng.PARTITION, ...)``.  Two keyword-only inputs are
passed by the engine only to partitioners that declare them: ``owners`` (the owner id of
each train example) and ``components`` (the node ids of each connected component of the
topology).  One algorithm per module; each option is a YAML file in ``configs/partition``.
"""

from fedsim.partitions.by_component import by_component
from fedsim.partitions.dirichlet import dirichlet, dirichlet_per_class, dirichlet_per_node
from fedsim.partitions.histogram import label_histograms
from fedsim.partitions.iid import iid
from fedsim.partitions.labels_per_node import labels_per_node
from fedsim.partitions.natural import natural
from fedsim.partitions.pathological import pathological
from fedsim.partitions.population import (
    population_classes,
    population_dirichlet,
    population_iid,
)
from fedsim.partitions.quantity_skew import quantity_skew
from fedsim.partitions.shards import shards
from fedsim.partitions.synthetic_population import population_synthetic
from fedsim.partitions.two_class_and_iid import two_class_and_iid

__all__ = [
    "by_component",
    "dirichlet",
    "dirichlet_per_class",
    "dirichlet_per_node",
    "iid",
    "label_histograms",
    "labels_per_node",
    "natural",
    "pathological",
    "population_classes",
    "population_dirichlet",
    "population_iid",
    "population_synthetic",
    "quantity_skew",
    "shards",
    "two_class_and_iid",
]
