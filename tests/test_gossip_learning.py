"""Gossip learning on three nodes holding 10, 20 and 30 examples, one epoch per merge.

Who pushes to whom is drawn from the seed; each test names the pushes its seed gives.
"""

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import compose_config
from helpers import started_backend, zero_logreg_task
from numpy.testing import assert_allclose

from fedsim.errors import ConfigError
from fedsim.plans import Aggregate, RoundPlan, Train
from fedsim.runner import run_job
from fedsim.simulated import churn
from fedsim.simulated.network import network
from fedsim.strategies import Federation, GossipLearning


def federation(
    seed: int,
    num_examples: tuple[int, ...] = (10, 20, 30),
    latency: str = "constant",
    availability: churn.Churn | None = None,
) -> Federation:
    """Nodes holding ``num_examples``, 1 s links (``"drawn"``: access latencies up to 1 s)."""
    num_nodes = len(num_examples)
    return Federation(
        num_nodes,
        seed,
        None,
        np.array(num_examples),
        network=network(num_nodes, seed, latency=latency, latency_s=1.0),
        churn=availability or churn.none(num_nodes, seed),
        message_bytes=1000,
        batch_size=4,
    )


def waves(plan: RoundPlan) -> list[tuple[np.ndarray, list[int]]]:
    """Each merge wave of a plan as (dense merge matrix over the sent models, nodes that then
    train), after the first step: every sender keeping the model it sends."""
    if not plan.steps:
        return []
    send, *steps = plan.steps
    assert all(group.sources.tolist() == group.targets.tolist() for group in send.groups)
    assert {group.written for group in send.groups} == {"sent"}
    pairs = list(zip(steps[::2], steps[1::2], strict=True))
    assert all(isinstance(m, Aggregate) and isinstance(t, Train) for m, t in pairs)
    num_nodes = len(plan.traffic.model_messages)
    return [(merge_matrix(merge, num_nodes), train.nodes.tolist()) for merge, train in pairs]


def merge_matrix(merge: Aggregate, num_nodes: int) -> np.ndarray:
    """Row r: how much of its own model and of its sender's sent model receiver r keeps."""
    matrix = np.eye(num_nodes)
    for group in merge.groups:
        (receiver,), (sender,) = group.targets, group.sources
        assert group.payload == "sent" and group.written == "params"
        matrix[receiver, receiver] = 1 - group.update.alpha
        matrix[receiver, sender] = group.update.alpha
    return matrix


def test_first_merges_are_half_and_half():
    # Seed 0 pushes 1 -> 0, 2 -> 1, 0 -> 2; every age is 0, so weights are equal.
    [(merge, trainers)] = waves(GossipLearning().plan(0, federation(seed=0)))
    assert_allclose(merge, [[0.5, 0.5, 0.0], [0.0, 0.5, 0.5], [0.5, 0.0, 0.5]])
    assert trainers == [0, 1, 2]


def test_nodes_that_receive_nothing_keep_their_model():
    # Seed 2 pushes 1 -> 0, 0 -> 1 and 2 -> 0; node 2 receives nothing.
    (merge, trainers), _ = waves(GossipLearning().plan(0, federation(seed=2)))
    assert_allclose(merge, [[0.5, 0.5, 0.0], [0.5, 0.5, 0.0], [0.0, 0.0, 1.0]])
    assert_allclose(merge.sum(axis=1), 1.0)
    assert trainers == [0, 1]


def test_age_is_the_older_age_plus_samples_trained():
    strategy, seeded = GossipLearning(), federation(seed=0)  # the cycle 1 -> 0, 2 -> 1, 0 -> 2
    strategy.plan(0, seeded)
    assert strategy.ages.tolist() == [0 + 10, 0 + 20, 0 + 30]
    strategy.plan(1, seeded)  # the same cycle again
    assert strategy.ages.tolist() == [max(10, 20) + 10, max(20, 30) + 20, max(30, 10) + 30]


def test_later_merges_weigh_models_by_age():
    strategy, seeded = GossipLearning(), federation(seed=0)
    strategy.plan(0, seeded)  # ages 10, 20, 30
    [(merge, _)] = waves(strategy.plan(1, seeded))
    # Node 0 (age 10) takes node 1 (age 20): 10/30 and 20/30.
    assert_allclose(merge[0], [1 / 3, 2 / 3, 0.0])
    assert_allclose(merge, [[1 / 3, 2 / 3, 0.0], [0.0, 2 / 5, 3 / 5], [1 / 4, 0.0, 3 / 4]])


def test_every_node_sends_one_model_with_its_age():
    # Seed 1 pushes 2 -> 0, 0 -> 2 and 1 -> 2: node 2 merges twice, node 1 not at all.
    traffic = GossipLearning().plan(0, federation(seed=1)).traffic
    assert traffic.model_messages.tolist() == [1, 1, 1]
    assert traffic.control_bytes == {"age": pytest.approx([8.0, 8.0, 8.0])}
    assert traffic.aggregations.tolist() == [1, 0, 2]


def test_two_models_are_merged_and_trained_on_in_order_of_arrival():
    # Seed 2 pushes 1 -> 0, 0 -> 1 and 2 -> 0.  Node 2's access latency (0.36 s) is below
    # node 1's (0.69 s), so node 0 merges node 2's model first though 1 < 2.
    seeded = federation(seed=2, latency="drawn")
    arrivals = seeded.network.transfer_times([2, 1], [0, 0], 1000 + 8)
    assert arrivals[0] < arrivals[1]
    strategy = GossipLearning()
    (first, first_trainers), (second, second_trainers) = waves(strategy.plan(0, seeded))
    assert_allclose(first, [[0.5, 0.0, 0.5], [0.5, 0.5, 0.0], [0.0, 0.0, 1.0]])
    assert first_trainers == [0, 1]
    # Node 1 merged and trained meanwhile (now 20 old), but its message left at the start of
    # the period with its model and age then (0): node 0 (10 old) gives it weight 0.
    assert_allclose(second, np.eye(3))
    assert second_trainers == [0]
    assert strategy.ages.tolist() == [max(10, 0) + 10, 20, 0]


def crash_run() -> Federation:
    """Four nodes; node 3 crashes at 60 s and node 2 at 120 s (round 2 starts at 120 s)."""
    crashes = churn.schedule(
        4, 0, crash_count=1, crash_every_s=60, crash_start_s=60, crash_until_fraction=0.5
    )
    return federation(seed=0, num_examples=(10, 20, 30, 40), availability=crashes)


def test_crashed_nodes_neither_send_nor_receive():
    # In round 2 node 0 pushes to node 2, which is down (lost), and node 1 pushes to node 0.
    plan = GossipLearning().plan(2, crash_run())
    [(merge, trainers)] = waves(plan)
    assert_allclose(merge, [[0.5, 0.5, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    assert trainers == [0]
    assert plan.traffic.model_messages[2:].tolist() == [0, 0]
    assert plan.traffic.aggregations.tolist() == [1, 0, 0, 0]


def test_a_lost_message_was_still_sent():
    # Node 0 does not know node 2 crashed: its push costs it a model and an age all the same.
    traffic = GossipLearning().plan(2, crash_run()).traffic
    assert traffic.model_messages.tolist() == [1, 1, 0, 0]
    assert traffic.control_bytes["age"].tolist() == [8.0, 8.0, 0.0, 0.0]


def test_plans_follow_from_the_seed():
    seeded = federation(seed=7, num_examples=(5, 10, 15, 20, 25, 30))
    first, second = GossipLearning(), GossipLearning()
    for round_idx in range(4):
        ours, theirs = first.plan(round_idx, seeded), second.plan(round_idx, seeded)
        for (merge, trainers), (same_merge, same_trainers) in zip(
            waves(ours), waves(theirs), strict=True
        ):
            assert merge.tolist() == same_merge.tolist() and trainers == same_trainers
        assert ours.traffic.model_messages.tolist() == theirs.traffic.model_messages.tolist()
    assert first.ages.tolist() == second.ages.tolist()


def test_a_round_ends_after_one_period():
    strategy, seeded = GossipLearning(period_s=30.0), federation(seed=0)
    assert [strategy.plan(r, seeded).finished_at for r in range(3)] == [30.0, 60.0, 90.0]


def test_state_restores_the_ages():
    seeded = federation(seed=1)
    assert GossipLearning().state() == {}
    original = GossipLearning()
    original.plan(0, seeded)
    original.plan(1, seeded)
    resumed = GossipLearning()
    resumed.restore(original.state())
    expected, plan = waves(original.plan(2, seeded)), waves(resumed.plan(2, seeded))
    assert [(m.tolist(), t) for m, t in plan] == [(m.tolist(), t) for m, t in expected]
    assert resumed.ages.tolist() == original.ages.tolist()


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"period_s": 0.0}, "strategy.period_s=0.0 must be > 0"),
        ({"local_epochs": 0}, "strategy.local_epochs=0 must be an integer >= 1"),
    ],
)
def test_bad_settings_are_rejected(settings, message):
    with pytest.raises(ConfigError, match=message):
        GossipLearning(**settings)


def test_one_node_cannot_gossip():
    with pytest.raises(ConfigError, match="needs num_nodes >= 2, got 1"):
        GossipLearning().validate(federation(seed=0, num_examples=(10,)))


@pytest.mark.slow
def test_a_run_advances_one_period_per_round(tmp_path):
    summary = run_job(
        compose_config("strategy=gossip_learning", "num_nodes=10", "rounds=4", "eval_every=2"),
        tmp_path,
    )
    assert summary["status"] == "completed"
    rows = pd.read_parquet(tmp_path / "metrics.parquet")
    sim_time = rows[rows.metric == "sim_time_s"].set_index("round")["value"]
    assert sim_time.to_dict() == {0: 0.0, 2: 120.0, 4: 240.0}


def test_a_merged_model_is_the_one_its_sender_had_when_it_sent():
    """Round 1 of seed 1 (drawn latencies, nodes holding 1, 1 and 2 examples), where a node
    merges and trains before its own push of the period's start is merged elsewhere: every
    merge takes the sender's row as it was at the period's start, with its age then."""
    task = zero_logreg_task(lr=0.5)
    seeded = federation(seed=1, num_examples=(1, 1, 2), latency="drawn")
    strategy, backend = GossipLearning(), started_backend(task, num_rows=3)
    backend.params.copy_(
        torch.randn(backend.params.shape, generator=torch.Generator().manual_seed(0))
    )
    backend.execute(strategy.plan(0, seeded), 0)
    plan, at_start = strategy.plan(1, seeded), backend.params.clone()
    backend.execute(RoundPlan(plan.steps[:1]), 1)  # the sent models kept
    merged_earlier: set[int] = set()
    checked_late_sender = False
    for merge, train in zip(plan.steps[1::2], plan.steps[2::2], strict=True):
        before = backend.params.clone()
        backend.execute(RoundPlan((merge,)), 1)
        for group in merge.groups:
            (receiver,), (sender,), alpha = group.targets, group.sources, group.update.alpha
            expected = (1 - alpha) * before[receiver] + alpha * at_start[sender]
            torch.testing.assert_close(backend.params[receiver], expected)
            checked_late_sender |= sender in merged_earlier and alpha > 0
        merged_earlier |= set(train.nodes.tolist())
        backend.execute(RoundPlan((train,)), 1)
    assert checked_late_sender  # a sender had changed since it sent: the case under test
