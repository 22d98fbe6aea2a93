"""Epidemic Learning: who sends to whom each round, the averaging W, bytes and determinism."""

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import compose_config
from helpers import TRAIN_X, TRAIN_Y, hand_gradient, started_backend, zero_logreg_task

from fedsim import rng
from fedsim.errors import ConfigError
from fedsim.plans import Gossip, Train
from fedsim.runner import run_job
from fedsim.strategies.base import Federation
from fedsim.strategies.epidemic_learning import (
    EpidemicLearning,
    average_with_received,
    draw_peers,
)

VARIANTS = ["oracle", "local"]


def federation(num_nodes: int, seed: int = 0) -> Federation:
    return Federation(num_nodes, seed, None, np.full(num_nodes, 4), batch_size=4)


def drawn(strategy: EpidemicLearning, round_idx: int = 0, num_nodes: int = 12, seed: int = 0):
    """The round's W (rows receive)."""
    train, gossip = strategy.plan(round_idx, federation(num_nodes, seed)).steps
    assert isinstance(train, Train) and train.nodes.tolist() == list(range(num_nodes))
    assert isinstance(gossip, Gossip)
    return gossip.weights


def test_w_averages_own_and_received_models_by_hand():
    # 1 sends to 0; 0 and 2 send to 1; nobody sends to 2.
    weights = average_with_received(np.array([1, 0, 2]), np.array([0, 1, 1]), 3)
    expected = [[1 / 2, 1 / 2, 0], [1 / 3, 1 / 3, 1 / 3], [0, 0, 1]]
    np.testing.assert_allclose(weights.toarray(), expected)
    messages = Gossip(weights).messages(3)
    assert sorted(zip(messages.senders.tolist(), messages.receivers.tolist(), strict=True)) == [
        (0, 1),
        (1, 0),
        (2, 1),
    ]
    assert messages.combiners.tolist() == [0, 1] and messages.fan_in.tolist() == [2, 3]


def test_each_node_receives_from_exactly_those_that_chose_it():
    strategy = EpidemicLearning(fanout=3, variant="local")
    weights = drawn(strategy, round_idx=5, seed=7).toarray()
    nodes, peers = draw_peers(rng.generator(7, rng.SAMPLING, 5), np.full(12, 3))
    chose = np.zeros((12, 12), dtype=bool)
    chose[peers, nodes] = True  # row: receiver, column: sender
    off_diagonal = ~np.eye(12, dtype=bool)
    assert ((weights > 0) & off_diagonal).tolist() == chose.tolist()
    received = chose.sum(axis=1)
    np.testing.assert_allclose(np.diag(weights), 1 / (1 + received))
    np.testing.assert_allclose(weights.sum(axis=1), 1)
    assert (chose.sum(axis=0) == 3).all()  # every node sends to 3 others
    assert len(set(received.tolist())) > 1  # EL-Local: in-degrees vary


def test_oracle_draws_an_s_regular_graph_each_round():
    strategy = EpidemicLearning(fanout=3, variant="oracle")
    first, second = drawn(strategy, round_idx=0).toarray(), drawn(strategy, round_idx=1).toarray()
    for weights in (first, second):
        links = (weights > 0) & ~np.eye(12, dtype=bool)
        assert (links.sum(axis=0) == 3).all() and (links.sum(axis=1) == 3).all()
        assert (links == links.T).all()
        np.testing.assert_allclose(weights[weights > 0], 1 / 4)
    assert not np.array_equal(first, second)


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_round_sends_n_times_s_models(variant):
    for round_idx in range(5):
        messages = Gossip(drawn(EpidemicLearning(3, variant), round_idx)).messages(12)
        assert len(messages.senders) == 12 * 3
        assert messages.sent(12).tolist() == [3] * 12


@pytest.mark.parametrize("variant", VARIANTS)
def test_bytes_counted_by_the_engine_equal_n_times_s_models(variant, tmp_path):
    config = compose_config(
        "num_nodes=12", "rounds=2", "eval_every=1", "strategy=epidemic_learning",
        f"strategy.variant={variant}", "strategy.fanout=3",
    )  # fmt: skip
    summary = run_job(config, tmp_path)
    rows = pd.read_parquet(tmp_path / "metrics.parquet")
    sent = rows[rows.metric == "bytes_sent_total"].set_index("round")["value"]
    message = summary["num_parameters"] * 4
    assert sent[2] == 2 * 12 * 3 * message


@pytest.mark.parametrize("variant", VARIANTS)
def test_all_others_is_full_averaging(variant):
    """s = n - 1: after one round every node holds the mean of the trained models."""
    task = zero_logreg_task(lr=0.5)
    backend = started_backend(task, num_rows=3, zero=True)
    plan = EpidemicLearning(fanout=2, variant=variant).plan(0, federation(3))
    backend.execute(plan, round_idx=0)
    trained = torch.stack([-0.5 * hand_gradient(TRAIN_X[i], int(TRAIN_Y[i])) for i in (0, 1, 2)])
    torch.testing.assert_close(backend.params, trained.mean(dim=0).expand(3, -1))


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_peers_depend_on_seed_and_round_alone(variant):
    strategy = EpidemicLearning(fanout=3, variant=variant)
    again = EpidemicLearning(fanout=3, variant=variant)
    drawn(again, round_idx=2)  # planning other rounds first changes nothing
    same = drawn(strategy, round_idx=3, seed=1).toarray()
    assert np.array_equal(same, drawn(again, round_idx=3, seed=1).toarray())
    assert not np.array_equal(same, drawn(strategy, round_idx=3, seed=2).toarray())
    assert not np.array_equal(same, drawn(strategy, round_idx=4, seed=1).toarray())


def test_draw_peers_gives_each_node_its_count_of_distinct_others():
    counts = np.array([0, 1, 2, 3, 4])
    nodes, peers = draw_peers(np.random.default_rng(0), counts)
    assert np.bincount(nodes, minlength=5).tolist() == counts.tolist()
    assert (nodes != peers).all()
    assert len(set(zip(nodes.tolist(), peers.tolist(), strict=True))) == len(nodes)


@pytest.mark.parametrize(
    "settings, num_nodes, message",
    [
        ({"fanout": 0}, 12, "strategy.fanout=0 must be an integer >= 1"),
        ({"variant": "push"}, 12, "strategy.variant=push is not one of: oracle, local"),
        ({"fanout": 12}, 12, "strategy.fanout=12 must be <= num_nodes - 1 = 11"),
        (
            {"fanout": 3, "variant": "oracle"},
            11,
            "strategy.fanout=3 with num_nodes=11: strategy.variant=oracle needs num_nodes "
            r"\* fanout even",
        ),
    ],
)
def test_bad_settings_are_named(settings, num_nodes, message):
    with pytest.raises(ConfigError, match=message):
        EpidemicLearning(**settings).validate(federation(num_nodes))


def test_local_takes_an_odd_number_of_sends():
    EpidemicLearning(fanout=3, variant="local").validate(federation(11))
