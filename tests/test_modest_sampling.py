"""MoDeST's hash ranking and ping-filtered selection."""

import math

import numpy as np

from fedsim.strategies.modest.sampling import ranking, select


def test_ranking_is_a_stable_hash_order_recomputed_every_round():
    everyone = np.arange(50)
    first = ranking(7, everyone, 50, 0)
    assert first.tolist() == ranking(7, everyone, 50, 0).tolist()
    assert sorted(first.tolist()) == everyone.tolist()
    assert ranking(8, everyone, 50, 0).tolist() != first.tolist()
    # A node that knows fewer peers ranks them in the same relative order.
    subset = everyone[everyone % 3 != 0]
    assert ranking(7, subset, 50, 0).tolist() == [n for n in first.tolist() if n % 3 != 0]


def test_every_node_heads_the_ranking_equally_often():
    num_nodes, rounds, sample = 20, 2000, 5
    counts = np.zeros(num_nodes)
    for round_idx in range(1, rounds + 1):
        counts[ranking(round_idx, np.arange(num_nodes), num_nodes, 0)[:sample]] += 1
    expected = rounds * sample / num_nodes  # s/n of the rounds
    chi_square = ((counts - expected) ** 2 / expected).sum()
    assert chi_square < 43.8  # the 0.999 quantile of chi-square with 19 degrees of freedom


def always(delay):
    return lambda node, at: at + delay


def test_selection_returns_the_first_responsive_nodes_and_counts_pings():
    chosen = select(9, np.array([5, 3, 7, 1]), 2, 10.0, always(0.1), timeout_s=5.0, resend_s=1.0)
    assert sorted(chosen.chosen) == [3, 5]
    assert chosen.finished_at == 10.1
    assert chosen.pings == {5: 1, 3: 1}


def test_an_unresponsive_node_is_replaced_by_the_next_in_rank_after_the_timeout():
    def answers(node, at):
        return None if node == 3 else at + 0.1

    chosen = select(9, np.array([5, 3, 7, 1]), 2, 0.0, answers, timeout_s=2.0, resend_s=1.0)
    assert chosen.chosen == [5, 7]
    assert math.isclose(chosen.finished_at, 2.1)  # 7 pinged at the timeout, answered 0.1 later
    assert chosen.pings == {5: 1, 3: 2, 7: 1}  # pings to 3 resent every second until timeout


def test_the_pinger_counts_as_answering_at_once():
    chosen = select(5, np.array([5, 3]), 1, 4.0, always(0.3), timeout_s=2.0, resend_s=1.0)
    assert chosen.chosen == [5] and chosen.finished_at == 4.0 and chosen.pings == {}


def test_a_short_ranking_returns_whoever_answered():
    def answers(node, at):
        return None if node != 1 else at + 0.2

    chosen = select(9, np.array([4, 1]), 3, 0.0, answers, timeout_s=2.0, resend_s=1.0)
    assert chosen.chosen == [1]
    assert chosen.finished_at == 2.0  # waited for 4's timeout before giving up


def test_slow_answers_get_resent_pings():
    chosen = select(9, np.array([2]), 1, 0.0, always(2.5), timeout_s=5.0, resend_s=1.0)
    assert chosen.pings == {2: 3}  # sent at 0, 1 and 2 s; answered at 2.5 s


def test_each_seed_is_a_new_deployment_with_its_own_ranking():
    everyone = np.arange(30)
    assert ranking(1, everyone, 30, 0).tolist() != ranking(1, everyone, 30, 1).tolist()
