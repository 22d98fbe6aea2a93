"""Tick-driven gossip learning: schedule, pushes, buffer semantics, merges and corrections."""

import networkx as nx
import numpy as np
import pandas as pd
import pytest
import torch
from conftest import compose_config
from helpers import started_backend, zero_logreg_task

from fedsim.aggregators import VarianceCorrected
from fedsim.plans import Merge, Push, RoundPlan, Train
from fedsim.runner import run_job
from fedsim.strategies import EventGossip
from fedsim.strategies.base import Federation
from fedsim.topology import Topology, metropolis_hastings


def federation(graph, num_examples=None, seed=0):
    num_nodes = graph.number_of_nodes()
    examples = np.full(num_nodes, 4) if num_examples is None else np.asarray(num_examples)
    return Federation(num_nodes, seed, Topology(graph, metropolis_hastings), examples, batch_size=4)


def mixing(plan):
    """The plan without its training: the hand computations follow the models as pushed."""
    return RoundPlan(tuple(s for s in plan.steps if not isinstance(s, Train)))


def step(plan, kind):
    return next((s for s in plan.steps if isinstance(s, kind)), None)


def test_buffers_hold_models_as_pushed_and_merge_once_full():
    """Path 0 - 1 - 2, everyone trains every 3 ticks (training left out), and a
    merge needs 2 models.  Tick 0: node 1 receives x0 and x2 and merges; nodes 0 and 2 hold
    one copy of x1 each.  Tick 3: they receive node 1's merged model and merge the mean of
    the two copies, the old one as it was pushed."""
    task = zero_logreg_task()
    backend = started_backend(task, 3, zero=True)
    backend.params[:, 0] = torch.tensor([1.0, 2.0, 4.0])
    fed = federation(nx.path_graph(3))
    gossip = EventGossip(train_every_min=3, train_every_max=3, buffer_size=2)
    plan = gossip.plan(0, fed)
    assert step(plan, Merge).nodes.tolist() == [1]
    backend.execute(mixing(plan), 0)
    x1 = 0.5 * 2 + 0.5 * (1 + 4) / 2  # 2.25
    assert backend.params[:, 0].tolist() == [1.0, x1, 4.0]
    for tick in (1, 2):
        assert gossip.plan(tick, fed).steps == ()
    plan = gossip.plan(3, fed)
    assert step(plan, Merge).nodes.tolist() == [0, 1, 2]
    backend.execute(mixing(plan), 3)
    expected = [
        0.5 * 1 + 0.5 * (2 + x1) / 2,
        0.5 * x1 + 0.5 * (1 + 4) / 2,
        0.5 * 4 + 0.5 * (2 + x1) / 2,
    ]
    assert backend.params[:, 0].tolist() == pytest.approx(expected)


def test_default_buffer_is_the_degree_and_a_node_that_hears_nothing_never_merges():
    graph = nx.star_graph(3)  # hub 0 with leaves 1, 2, 3
    graph.add_node(4)  # isolated
    plan = EventGossip().plan(0, federation(graph))
    push = step(plan, Push)
    assert sorted(zip(push.sources.tolist(), push.targets.tolist(), strict=True)) == [
        (0, 1), (0, 2), (0, 3), (1, 0), (2, 0), (3, 0),
    ]  # fmt: skip
    assert step(plan, Merge).nodes.tolist() == [0, 1, 2, 3]  # the hub needed 3, leaves 1


def test_nodes_train_every_8_to_12_ticks_reproducibly_from_the_seed():
    fed = federation(nx.random_regular_graph(4, 20, seed=1))
    schedules = []
    for _ in range(2):
        gossip = EventGossip()
        schedules.append([step(gossip.plan(tick, fed), Train) for tick in range(60)])
    trained = [[] for _ in range(20)]
    for tick, (train, again) in enumerate(zip(*schedules, strict=True)):
        nodes = [] if train is None else train.nodes.tolist()
        assert nodes == ([] if again is None else again.nodes.tolist())
        for node in nodes:
            trained[node].append(tick)
        if train is not None:
            assert train.steps == 1 and not train.fresh_optimizer  # momentum survives merges
    gaps = np.concatenate([np.diff(ticks) for ticks in trained])
    assert gaps.min() >= 8 and gaps.max() <= 12 and all(ticks[0] == 0 for ticks in trained)
    other_seed = EventGossip()
    later = [
        step(other_seed.plan(t, federation(nx.random_regular_graph(4, 20, seed=1), seed=5)), Train)
        for t in range(20)
    ]
    assert [None if s is None else s.nodes.tolist() for s in later] != [
        None if s is None else s.nodes.tolist() for s in schedules[0][:20]
    ]


def test_fanout_pushes_to_that_many_random_neighbours():
    plan = EventGossip(fanout=2).plan(0, federation(nx.complete_graph(6)))
    push = step(plan, Push)
    assert np.bincount(push.sources).tolist() == [2] * 6
    assert (push.sources != push.targets).all()


def test_age_weighted_merges_weigh_each_model_by_samples_trained():
    fed = federation(nx.path_graph(3), num_examples=[4, 8, 12])
    gossip = EventGossip(train_every_min=3, train_every_max=3, merge="age_weighted")
    plan = gossip.plan(0, fed)  # ages after one batch of 4: [4, 4, 4]
    push = step(plan, Push)
    assert push.weights.tolist() == [4.0] * 4
    merge = step(plan, Merge)
    # node 1: own age 4 against received 4 + 4; nodes 0 and 2: 4 against 4.
    assert merge.self_weights.tolist() == pytest.approx([0.5, 1 / 3, 0.5])


def test_gossip_with_variance_correction_restores_each_merged_tensors_variance():
    task = zero_logreg_task()
    backend = started_backend(task, 3)
    aggregator = VarianceCorrected(tensors="all")
    backend.start(task, 3, aggregator)
    backend.params.copy_(
        torch.tensor([[1.0, 0, 0, 1, 1, 0], [0, 2, 1, 0, 0, 2], [3, 0, 0, 1, 3, 1]])
    )
    before = backend.params.clone()
    plan = EventGossip(train_every_min=3, train_every_max=3).plan(0, federation(nx.path_graph(3)))
    backend.execute(mixing(plan), 0)
    variances = aggregator.variances(before, task.layout)
    target_of_1 = (variances[0] + variances[2]) / 2  # the models node 1 received
    assert torch.allclose(aggregator.variances(backend.params[1:2], task.layout)[0], target_of_1)
    assert backend.correction_factors()  # factors were tallied for the metrics


def test_a_gossip_run_records_ticks_and_correction_factors(tmp_path):
    config = compose_config(
        "strategy=gossip", "topology=regular", "num_nodes=10", "rounds=20", "eval_every=10",
        "aggregator=variance_corrected", "init=independent", "init_scheme=xavier",
    )  # fmt: skip
    summary = run_job(config, tmp_path)
    assert summary["status"] == "completed"
    rows = pd.read_parquet(tmp_path / "metrics.parquet")
    metrics = rows[rows.node.isna()].pivot(index="round", columns="metric", values="value")
    assert metrics.loc[20, "sim_time_s"] == 20.0
    factors = metrics.filter(like="correction_factor_")
    assert not factors.empty and (factors.loc[10] > 1).all()  # independent inits: shrunk


def test_a_gossip_run_resumed_from_a_checkpoint_equals_an_uninterrupted_one(tmp_path):
    """Buffers half full at the checkpoint travel with it (backend buffer, strategy counts)."""
    from fedsim.build import build_simulation
    from fedsim.metrics.recorder import Recorder

    settings = [
        "strategy=gossip", "topology=regular", "num_nodes=10", "rounds=24", "eval_every=4",
        "aggregator=variance_corrected", "init=independent", "checkpoint_every=10",
        "strategy.buffer_size=6", "optimizer.momentum=0.9",
    ]  # fmt: skip
    saved = []
    whole = build_simulation(compose_config(*settings))
    whole.run(Recorder(tmp_path / "whole.parquet"), progress=False, checkpoint=saved.append)
    at_10 = next(state for state in saved if state["rounds_completed"] == 10)
    buffer = at_10["backend"]["buffer"]
    assert buffer is not None and buffer["weight"].sum() > 0
    resumed = build_simulation(compose_config(*settings))
    recorder = Recorder(tmp_path / "resumed.parquet")
    resumed.run(recorder, progress=False, resume=at_10)
    assert torch.equal(resumed.backend.params, whole.backend.params)
