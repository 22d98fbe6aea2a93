"""MoDeST round by round: who trains, who aggregates, failures, churn, bytes; and whole runs."""

import json

import numpy as np
import pandas as pd
import pytest
from conftest import compose_config

from fedsim.plans import Aggregate, Train
from fedsim.runner import run_job
from fedsim.simulated import churn as churn_models
from fedsim.simulated.churn import CRASH, Churn
from fedsim.simulated.network import network
from fedsim.strategies import FixedServerFL, MoDeST
from fedsim.strategies.base import Federation
from fedsim.strategies.modest.sampling import ranking

MODEL_BYTES = 4000


def federation(num_nodes, churn=None, examples=None, **network_settings):
    examples = np.full(num_nodes, 20) if examples is None else np.asarray(examples)
    return Federation(
        num_nodes,
        0,
        None,
        examples,
        network=network(num_nodes, 0, **network_settings),
        churn=churn or churn_models.none(num_nodes, 0),
        message_bytes=MODEL_BYTES,
        batch_size=5,
    )


def crashes(num_nodes, nodes, at=0.001):
    """A churn where ``nodes`` crash at time ``at`` (before they could finish training)."""
    nodes = np.asarray(nodes, dtype=np.int64)
    return Churn(
        initial=np.ones(num_nodes, dtype=bool),
        times=np.full(len(nodes), at),
        nodes=nodes,
        kinds=np.full(len(nodes), CRASH, dtype=np.int8),
    )


def plans(strategy, fed, rounds):
    strategy.validate(fed)
    return [strategy.plan(round_idx, fed) for round_idx in range(rounds)]


def trainers(plan):
    return plan.steps[0].nodes.tolist()


def groups(plan):
    return [] if len(plan.steps) < 2 else list(plan.steps[1].groups)


def test_the_first_sample_is_the_nominal_hash_sample():
    fed = federation(12)
    plan = MoDeST(sample_size=4).plan(0, fed)
    assert trainers(plan) == sorted(ranking(1, np.arange(12), 12, 0)[:4].tolist())
    train = plan.steps[0]
    assert isinstance(train, Train) and train.fresh_optimizer and train.epochs == 1


def test_the_aggregator_heads_the_next_ranking_and_trains_in_the_next_round():
    fed = federation(12)
    first, second = plans(MoDeST(sample_size=4), fed, 2)
    next_sample = ranking(2, np.arange(12), 12, 0)[:4]
    (group,) = groups(first)
    assert sorted(group.sources.tolist()) == trainers(first)
    assert group.targets.tolist() == sorted(next_sample.tolist())
    assert trainers(second) == sorted(next_sample.tolist())
    assert first.traffic.aggregations.tolist() == [
        int(node == next_sample[0]) for node in range(12)
    ]


def test_averaging_is_uniform_whatever_the_data_sizes():
    fed = federation(8, examples=[5, 50, 500, 5, 50, 500, 5, 50])
    (group,) = groups(MoDeST(sample_size=4).plan(0, fed))
    assert np.allclose(group.weights, 0.25)


def test_every_node_is_sampled_about_s_over_n_of_the_rounds():
    num_nodes, rounds, sample = 20, 600, 5
    counts = np.zeros(num_nodes)
    for plan in plans(MoDeST(sample_size=sample), federation(num_nodes), rounds):
        counts[trainers(plan)] += 1
    expected = rounds * sample / num_nodes
    assert ((counts - expected) ** 2 / expected).sum() < 43.8  # chi-square, 19 dof, 0.999


def test_model_transfers_per_round_are_about_two_a_s():
    fed = federation(30)
    for plan in plans(MoDeST(sample_size=10, num_aggregators=2), fed, 5)[1:]:
        sent = plan.traffic.model_messages.sum()
        # 10 trainers x 2 aggregators up, 2 aggregators x 10 trainers down, minus self-sends.
        assert 2 * 2 * 10 - 4 <= sent <= 2 * 2 * 10


def test_a_newer_average_is_adopted_once_with_several_aggregators():
    fed = federation(30)
    plan = plans(MoDeST(sample_size=6, num_aggregators=3), fed, 2)[1]
    (step,) = [s for s in plan.steps if isinstance(s, Aggregate)]
    targets = np.concatenate([group.targets for group in step.groups])
    assert len(targets) == len(set(targets.tolist())) == 6  # each trainer adopts one average


def test_success_fraction_tolerates_floor_s_times_1_minus_sf_missing_trainers():
    first_sample = ranking(1, np.arange(30), 30, 0)[:10]
    tolerated = crashes(30, first_sample[-2:])  # floor(10 * (1 - 0.8)) = 2 missing
    plan = MoDeST(sample_size=10, success_fraction=0.8).plan(0, federation(30, tolerated))
    assert plan.stalled is None
    (group,) = groups(plan)
    assert len(group.sources) == 8
    one_more = crashes(30, first_sample[-3:])
    plan = MoDeST(sample_size=10, success_fraction=0.8).plan(0, federation(30, one_more))
    assert plan.stalled is not None and "success_fraction=0.8" in plan.stalled
    assert groups(plan) == []


def test_with_sf_1_one_crashed_trainer_stalls_v1_unless_an_aggregation_timeout_is_set():
    one = crashes(30, ranking(1, np.arange(30), 30, 0)[:10][-1:])
    assert MoDeST(sample_size=10).plan(0, federation(30, one)).stalled is not None
    plan = MoDeST(sample_size=10, aggregation_timeout_s=2.0).plan(0, federation(30, one))
    assert plan.stalled is None and len(groups(plan)[0].sources) == 9


def test_a_crashed_node_is_replaced_by_the_next_responsive_one_in_the_ranking():
    next_ranking = ranking(2, np.arange(30), 30, 0)
    down = next_ranking[2]
    plan = MoDeST(sample_size=5, ping_timeout_s=2.0).plan(0, federation(30, crashes(30, [down])))
    expected = [n for n in next_ranking.tolist() if n != down][:5]
    assert groups(plan)[0].targets.tolist() == sorted(expected)
    assert plan.traffic.control_bytes["ping"].sum() > 0


def test_a_trainer_that_crashes_while_it_pings_for_aggregators_sends_nothing():
    first_sample = ranking(1, np.arange(30), 30, 0)[:10].tolist()
    head, aggregator = ranking(2, np.arange(30), 30, 0)[:2].tolist()
    crasher = next(node for node in first_sample if node not in (head, aggregator))
    # The head of round 2's ranking is down from the start: every trainer waits out a 5 s ping
    # timeout before it reaches the aggregator.  ``crasher`` finishes training at 0.02 s and
    # crashes at 1 s, while it waits: v1 cancels its send.
    churn = Churn(
        initial=np.ones(30, dtype=bool),
        times=np.array([0.001, 1.0]),
        nodes=np.array([head, crasher]),
        kinds=np.full(2, CRASH, dtype=np.int8),
    )
    plan = MoDeST(sample_size=10, success_fraction=0.8).plan(0, federation(30, churn))
    assert crasher in trainers(plan)
    (group,) = groups(plan)
    expected = sorted(set(first_sample) - {head, crasher})
    assert group.sources.tolist() == expected  # 8 models: the head never trained


def test_a_ping_and_its_pong_raise_both_views_to_the_higher_round_estimate():
    strategy = MoDeST(sample_size=1)
    strategy.plan(0, federation(2))
    views = strategy._protocol["views"]
    for pinger_estimate, pingee_estimate in ((30, 5), (30, 40)):
        views.last_round[:] = 0
        views.aggregate_round[:] = views.train_round[:] = 0
        views.aggregate_round[0], views.train_round[1] = pinger_estimate, pingee_estimate
        chosen, _ = strategy._select(0, pinger_estimate + 1, 2, 0.0)  # node 0 pings node 1
        assert sorted(chosen) == [0, 1]
        both = max(pinger_estimate, pingee_estimate)
        assert views.last_round[1, 0] == both  # on_ping: max(own estimate, ping's)
        assert views.last_round[0, 1] == both  # on_pong: max(own estimate, pong's)


def test_nodes_with_different_views_can_sample_differently_and_still_progress():
    fed = federation(20)
    strategy = MoDeST(sample_size=4, success_fraction=0.75)
    strategy.plan(0, fed)
    views = strategy._protocol["views"]
    trainer, other = sorted(strategy._protocol["trainers"])[:2]
    hidden = [n for n in ranking(3, np.arange(20), 20, 0)[:4].tolist() if n != trainer][:2]
    views.membership[trainer, hidden] = -1  # this trainer does not know two of round 3's top
    samples = [ranking(3, views.candidates(node, 3, 1000), 20, 0)[:4] for node in (trainer, other)]
    assert samples[0].tolist() != samples[1].tolist()
    for round_idx in range(1, 6):
        assert strategy.plan(round_idx, fed).stalled is None


def test_modest_equals_the_fixed_server_fl_baseline_without_failures():
    fed = federation(20)
    modest_plans = plans(MoDeST(sample_size=5), fed, 6)
    for modest, fl in zip(modest_plans, plans(FixedServerFL(sample_size=5), fed, 6), strict=True):
        assert trainers(modest) == trainers(fl)
        assert [g.sources.tolist() for g in groups(modest)] == [
            g.sources.tolist() for g in groups(fl)
        ]
        assert [g.targets.tolist() for g in groups(modest)] == [
            g.targets.tolist() for g in groups(fl)
        ]
    fl = plans(FixedServerFL(sample_size=5), fed, 6)
    assert all(plan.traffic.aggregations[0] == 1 for plan in fl)  # node 0 on a uniform network
    assert sum(plan.traffic.aggregations.sum() for plan in fl) == 6


def test_view_bytes_grow_linearly_with_the_number_of_nodes():
    view_bytes = []
    for num_nodes in (20, 40, 80):
        (plan,) = plans(MoDeST(sample_size=5), federation(num_nodes), 1)
        messages = plan.traffic.model_messages.sum()
        view_bytes.append(plan.traffic.control_bytes["view"].sum() / messages)
    # Every model message carries the sender's whole view: 87 bytes per known node.
    assert view_bytes == [87 * 20, 87 * 40, 87 * 80]


def test_80_percent_crashes_leave_rounds_completing_with_the_survivors():
    num_nodes = 50
    churn = churn_models.schedule(
        num_nodes, 0, crash_count=1, crash_every_s=4.0, crash_start_s=30.0
    )  # one crash at a time: 40 of 50 down by 30 + 39 * 4 = 186 s
    fed = federation(num_nodes, churn, seconds_per_unit=0.05)  # one epoch of 20 samples: 1 s
    # sf = 0.8 tolerates one trainer crashing mid-round; a second aggregator, the aggregator;
    # the aggregation timeout, two (without it this run stalls at round 54, as v1 would).
    strategy = MoDeST(
        sample_size=5,
        num_aggregators=2,
        success_fraction=0.8,
        ping_timeout_s=2.0,
        inactivity_threshold=20,
        aggregation_timeout_s=5.0,
    )
    late = []
    for plan in plans(strategy, fed, 150):
        assert plan.stalled is None
        if plan.finished_at > 190:
            late.append(trainers(plan))
    assert len(late) > 10  # rounds keep completing after everyone who crashes is down
    assert set(np.concatenate(late).tolist()) <= set(range(10))  # only survivors train


def test_a_joining_node_spreads_through_views_and_gets_sampled():
    num_nodes = 12
    churn = churn_models.schedule(num_nodes, 0, join_count=1, join_start_s=5.0)
    fed = federation(num_nodes, churn)
    strategy = MoDeST(sample_size=4, success_fraction=0.75)  # views differ while J spreads
    sampled_at = [plan.finished_at for plan in plans(strategy, fed, 200) if 11 in trainers(plan)]
    assert sampled_at and min(sampled_at) > 5.0
    views = strategy._protocol["views"]
    assert (views.membership[:11, 11] >= 0).sum() > 5  # most nodes learned of the joiner


def test_a_node_that_left_gracefully_is_never_sampled_again():
    churn = churn_models.schedule(12, 0, leave_count=1, leave_start_s=3.0)
    fed = federation(12, churn)
    leaver = 11  # crash_order=last: the highest id leaves
    after = [trainers(p) for p in plans(MoDeST(sample_size=6), fed, 100) if p.finished_at > 4]
    assert after and all(leaver not in nodes for nodes in after)


def test_state_restores_the_protocol_exactly():
    fed = federation(20, churn_models.schedule(20, 0, crash_count=2, crash_start_s=2.0))
    strategy = MoDeST(sample_size=5, success_fraction=0.8)
    plans(strategy, fed, 4)
    saved = strategy.state()
    expected = [strategy.plan(r, fed) for r in range(4, 10)]
    restored = MoDeST(sample_size=5, success_fraction=0.8)
    restored.restore(saved)
    for round_idx, plan in zip(range(4, 10), expected, strict=True):
        again = restored.plan(round_idx, fed)
        assert trainers(again) == trainers(plan) and again.finished_at == plan.finished_at


def test_building_a_run_leaves_the_protocol_unstarted():
    from fedsim.build import build_simulation  # the memory estimate plans round 0 on a copy

    simulation = build_simulation(compose_config("strategy=modest", "num_nodes=12"))
    assert simulation.strategy.state() == {}


def run(tmp_path, name, *overrides):
    run_dir = tmp_path / name
    run_dir.mkdir()
    config = compose_config("num_nodes=8", "rounds=4", "eval_every=1", *overrides)
    summary = run_job(config, run_dir)
    metrics = pd.read_parquet(run_dir / "metrics.parquet")
    return metrics[metrics.node.isna()].pivot(
        index="round", columns="metric", values="value"
    ), summary


def test_with_s_equal_n_and_a_1_modest_equals_full_participation_fedavg(tmp_path):
    modest, _ = run(tmp_path, "modest", "strategy=modest", "strategy.sample_size=8")
    fedavg, _ = run(
        tmp_path,
        "fedavg",
        "strategy=fedavg",
        "strategy.sample_size=8",
        "strategy.weighting=uniform",
    )
    for metric in ("accuracy", "loss"):
        assert np.allclose(modest[metric], fedavg[metric], atol=1e-6), metric


def test_a_stalled_run_stops_with_its_reason_and_keeps_its_metrics(tmp_path):
    trace = tmp_path / "trace.csv"
    first = ranking(1, np.arange(8), 8, 0)[:4].tolist()
    trace.write_text(
        "node,start_s,end_s\n"
        + "".join(f"{n},0,{0.001 if n == first[0] else ''}\n" for n in range(8))
    )
    with pytest.warns(UserWarning, match="stalled"):
        metrics, summary = run(
            tmp_path,
            "run",
            "strategy=modest",
            "strategy.sample_size=4",
            "churn=trace",
            f"churn.path={trace}",
        )
    assert summary["status"] == "stalled" and summary["rounds_completed"] == 1
    saved = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert "MoDeST stalled at round 1" in saved["stalled"]
    assert list(metrics.index) == [0, 1]


def test_sim_time_bytes_and_aggregation_load_are_recorded(tmp_path):
    metrics, _ = run(tmp_path, "run", "strategy=modest", "strategy.sample_size=4")
    assert metrics["sim_time_s"].is_monotonic_increasing and metrics["sim_time_s"].iloc[-1] > 0
    assert (
        metrics["bytes_sent_total"]
        == metrics[["bytes_model_total", "bytes_control_total"]].sum(axis=1)
    ).all()
    assert metrics["bytes_view_total"].iloc[-1] > 0
    totals = pd.read_parquet(tmp_path / "run" / "node_totals.parquet")
    assert totals.aggregations.sum() == 4  # one aggregator per round
