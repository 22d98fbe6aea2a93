"""ClippedGossip: each node moves by its neighbours' offsets clipped to an (adaptive) radius."""

import numpy as np
import pandas as pd
import pytest
import torch
from test_backend_ray import metrics

from fedsim.aggregators.clipped_gossip import ClippedGossip
from fedsim.errors import ConfigError

OWN = torch.zeros(1, 2, dtype=torch.float64)
# the own model first, then neighbours at distances 3, 1 and 10
ROWS = torch.tensor([[[0.0, 0.0], [3.0, 0.0], [0.0, 1.0], [0.0, 10.0]]], dtype=torch.float64)


def test_the_adaptive_radius_clips_exactly_the_farthest_neighbour():
    """tau = 3, the second-largest distance: (0, 10) counts as (0, 3), the others as they are:
    ((3, 0) + (0, 1) + (0, 3)) / 4."""
    combined = ClippedGossip().combine(ROWS, torch.ones(1, 4), OWN)
    torch.testing.assert_close(combined, torch.tensor([[0.75, 1.0]], dtype=torch.float64))


def test_with_one_neighbour_nothing_is_clipped():
    rows = torch.tensor([[[0.0, 0.0], [0.0, 10.0]]], dtype=torch.float64)
    combined = ClippedGossip().combine(rows, torch.tensor([[1.0, 3.0]]), OWN)
    torch.testing.assert_close(combined, torch.tensor([[0.0, 7.5]], dtype=torch.float64))


def test_a_fixed_radius_clips_every_offset():
    """tau = 1: (3, 0) -> (1, 0), (0, 1) stays, (0, 10) -> (0, 1); weights 1/4 each."""
    combined = ClippedGossip(tau=1.0).combine(ROWS, torch.ones(1, 4), OWN)
    torch.testing.assert_close(combined, torch.tensor([[0.25, 0.5]], dtype=torch.float64))


def test_many_targets_at_once_equal_one_at_a_time():
    generator = torch.Generator().manual_seed(0)
    rows = torch.randn(6, 5, 7, generator=generator, dtype=torch.float64)
    weights = torch.rand(6, 5, generator=generator)
    own = rows[:, 0].clone()
    together = ClippedGossip().combine(rows, weights, own)
    alone = [ClippedGossip().combine(rows[[t]], weights[[t]], own[[t]]) for t in range(6)]
    torch.testing.assert_close(together, torch.cat(alone), rtol=0, atol=1e-12)


def test_a_negative_radius_is_refused():
    with pytest.raises(ConfigError, match=r"aggregator.tau=-1.0 must be >= 0 or null"):
        ClippedGossip(tau=-1.0)


def test_a_huge_radius_runs_as_gossip_averaging(tmp_path):
    """tau = inf: plain D-PSGD, the same metrics as aggregator=mean."""
    gossip = ["strategy=dpsgd", "topology=regular", "topology.degree=4", "rounds=2"]
    clipped = metrics(tmp_path, "clipped", "aggregator=clipped_gossip", "aggregator.tau=1e9",
                      *gossip)  # fmt: skip
    mean = metrics(tmp_path, "mean", "aggregator=mean", *gossip)
    pd.testing.assert_frame_equal(clipped.drop(columns="value"), mean.drop(columns="value"))
    assert np.allclose(clipped.value, mean.value, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_under_dissensus_gossip_averaging_stalls_and_clipped_gossip_reaches_consensus(tmp_path):
    """Spec byzantine.md, "what fedsim must be able to show" 7: 16 nodes of a random 8-regular
    graph from independent initial models, 2 attackers with epsilon = 1, training all but
    off (lr 1e-9): the honest consensus distance stays put with the mean and vanishes with
    ClippedGossip on the same graph and seed."""
    settings = ["num_nodes=16", "rounds=10", "eval_every=10", "strategy=dpsgd",
                "topology=regular", "topology.degree=8", "init=independent",
                "attack=dissensus", "attack.fraction=0.125", "optimizer.lr=1e-9",
                "strategy.local_steps=1", "strategy.local_epochs=null"]  # fmt: skip

    def distances(aggregator: str) -> list[float]:
        rows = metrics(tmp_path, aggregator, f"aggregator={aggregator}", *settings)
        return rows.query("metric == 'consensus_distance'").value.tolist()

    (start, stalled), (same_start, agreed) = distances("mean"), distances("clipped_gossip")
    assert start == same_start and stalled > 0.1 * start and agreed < 1e-4 * start
