"""A single global merge: sparse random gossip, the merge rounds, their bytes, determinism."""

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import compose_config
from helpers import started_backend, zero_logreg_task

from fedsim.errors import ConfigError
from fedsim.plans import Average, Gossip, RoundPlan, Train
from fedsim.runner import run_job
from fedsim.strategies.base import Federation
from fedsim.strategies.single_merge import SingleMerge


def federation(num_nodes: int, seed: int = 0) -> Federation:
    return Federation(num_nodes, seed, None, np.full(num_nodes, 4), batch_size=4)


def mixing(strategy: SingleMerge, round_idx: int, num_nodes: int = 20, seed: int = 0):
    train, mixed = strategy.plan(round_idx, federation(num_nodes, seed)).steps
    assert isinstance(train, Train) and train.nodes.tolist() == list(range(num_nodes))
    return mixed


def test_right_after_the_merge_every_node_holds_the_global_average():
    task = zero_logreg_task(lr=0.5)
    strategy, three = SingleMerge(merge_round=1, peers=1), federation(3)
    backend = started_backend(task, num_rows=3)
    backend.params[:] = torch.tensor([[1.0], [2.0], [4.0]]) * torch.linspace(-1, 1, 6)
    backend.execute(strategy.plan(0, three), round_idx=0)
    before = started_backend(task, num_rows=3)
    before.params[:] = backend.params
    train, merge = strategy.plan(1, three).steps
    assert isinstance(merge, Average)
    before.execute(RoundPlan((train,)), round_idx=1)
    backend.execute(strategy.plan(1, three), round_idx=1)
    torch.testing.assert_close(backend.params, before.params.mean(dim=0).expand(3, -1))


def test_before_and_after_the_merge_each_node_averages_with_r_random_peers():
    strategy = SingleMerge(merge_round=3, peers=2)
    kinds = [type(mixing(strategy, round_idx)) for round_idx in range(6)]
    assert kinds == [Gossip, Gossip, Gossip, Average, Gossip, Gossip]
    for round_idx in (0, 4):
        weights = mixing(strategy, round_idx).weights.toarray()
        assert ((weights > 0).sum(axis=1) == 3).all()  # itself and 2 peers
        np.testing.assert_allclose(weights[weights > 0], 1 / 3)
        assert len(Gossip(mixing(strategy, round_idx).weights).messages(20).senders) == 20 * 2


def test_a_fractional_r_adds_a_peer_with_its_fractional_part():
    strategy = SingleMerge(merge_round=1000, peers=1.25)
    peers = np.concatenate(
        [(mixing(strategy, r).weights.toarray() > 0).sum(axis=1) - 1 for r in range(200)]
    )
    assert set(peers.tolist()) == {1, 2}
    assert abs(peers.mean() - 1.25) < 0.03  # 4000 draws: standard error 0.007


def test_no_peers_trains_alone_until_the_merge():
    weights = mixing(SingleMerge(merge_round=5, peers=0), 0).weights
    assert (weights.toarray() == np.eye(20)).all()
    assert len(Gossip(weights).messages(20).senders) == 0


def test_a_window_of_merges():
    strategy = SingleMerge(merge_round=2, merge_rounds=3, peers=1)
    assert [strategy.merges(r) for r in range(7)] == [False, False, True, True, True, False, False]


def test_a_merge_sends_every_model_to_every_other_node():
    merge = mixing(SingleMerge(merge_round=0), 0)
    np.testing.assert_allclose(merge.weights, 1 / 20)
    messages = merge.messages(20)
    assert len(messages.senders) == 20 * 19 and messages.sent(20).tolist() == [19] * 20


def test_bytes_counted_by_the_engine(tmp_path):
    config = compose_config(
        "num_nodes=12", "rounds=2", "eval_every=1", "strategy=single_merge",
        "strategy.merge_round=1", "strategy.peers=2",
    )  # fmt: skip
    summary = run_job(config, tmp_path)
    rows = pd.read_parquet(tmp_path / "metrics.parquet")
    sent = rows[rows.metric == "bytes_sent_total"].set_index("round")["value"]
    message = summary["num_parameters"] * 4
    assert sent[1] == 12 * 2 * message  # round 0: sparse gossip, 2 peers each
    assert sent[2] == (12 * 2 + 12 * 11) * message  # round 1: the merge


def test_the_peers_depend_on_seed_and_round_alone():
    strategy = SingleMerge(merge_round=100, peers=1.5)
    again = SingleMerge(merge_round=100, peers=1.5)
    mixing(again, 2)
    same = mixing(strategy, 3, seed=1).weights.toarray()
    assert np.array_equal(same, mixing(again, 3, seed=1).weights.toarray())
    assert not np.array_equal(same, mixing(strategy, 3, seed=2).weights.toarray())
    assert not np.array_equal(same, mixing(strategy, 4, seed=1).weights.toarray())


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"merge_round": -1}, "strategy.merge_round=-1 must be an integer >= 0"),
        ({"merge_round": 1, "merge_rounds": 0}, "strategy.merge_rounds=0 must be an integer >= 1"),
        ({"merge_round": 1, "peers": -0.5}, r"strategy.peers=-0.5 must be >= 0"),
        ({"merge_round": 1, "peers": 12}, "strategy.peers=12 must be <= num_nodes - 1 = 11"),
    ],
)
def test_bad_settings_are_named(settings, message):
    with pytest.raises(ConfigError, match=message):
        SingleMerge(**settings).validate(federation(12))
