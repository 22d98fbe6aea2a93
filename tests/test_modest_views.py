"""Every node's view of the population: merge, evidence, joins and leaves."""

import numpy as np

from fedsim.strategies.modest.views import UNKNOWN, Views


def three_nodes():
    return Views(3, np.array([True, True, False]))


def test_initial_participants_know_each_other_and_nobody_else():
    views = three_nodes()
    assert views.candidates(0, 1, 10).tolist() == [0, 1]
    assert views.membership[0, 2] == UNKNOWN and views.entries(0) == 2
    assert views.candidates(2, 1, 10).tolist() == [2]  # a node always counts itself


def test_merge_keeps_the_newest_round_and_the_newest_membership():
    views = three_nodes()
    views.last_round[0] = [4, 9, UNKNOWN]
    other = (
        np.array([6, 2, 3], dtype=np.int32),  # 0 seen in round 6, 1 in round 2, 2 in round 3
        np.array([0, 1, 0], dtype=np.int32),  # 1 announced again (index 1: a leave), 2 joined
        np.array([False, True, False]),
    )
    views.merge(0, other)
    assert views.last_round[0].tolist() == [6, 9, 3]
    assert views.membership[0].tolist() == [0, 1, 0]
    assert views.leaving[0].tolist() == [False, True, False]
    # An older membership index never overrides a newer one, and keeps last_round (the fixed
    # merge: v1 overwrote last_round with the membership index).
    views.merge(0, (np.zeros(3, np.int32), np.zeros(3, np.int32), np.zeros(3, bool)))
    assert views.leaving[0, 1] and views.last_round[0].tolist() == [6, 9, 3]


def test_inactive_and_leaving_nodes_are_not_candidates():
    views = Views(4, np.ones(4, dtype=bool))
    views.last_round[0] = [30, 30, 5, 30]
    views.leaving[0, 3] = True
    assert views.candidates(0, 30, inactivity_threshold=20).tolist() == [0, 1]
    assert views.candidates(0, 30, inactivity_threshold=1000).tolist() == [0, 1, 2]


def test_a_join_applies_only_after_the_receivers_next_send():
    views = three_nodes()
    views.announce(receiver=0, node=2, round_idx=3, index=0, leave=False)
    assert 2 not in views.candidates(0, 3, 10)
    views.apply_pending(0)  # node 0 sent a model
    assert 2 in views.candidates(0, 3, 10)
    assert views.last_round[0, 2] == 3


def test_a_leave_applies_at_once():
    views = three_nodes()
    views.announce(receiver=0, node=1, round_idx=3, index=1, leave=True)
    assert views.candidates(0, 3, 10).tolist() == [0]


def test_evidence_of_liveness_raises_last_round_of_known_nodes_only():
    views = three_nodes()
    views.saw(0, 1, 7)
    views.saw(0, 1, 5)
    views.saw(0, 2, 7)  # 2 is unknown to 0: a message does not make it a member
    assert views.last_round[0].tolist() == [0, 7, UNKNOWN]
    assert views.round_estimate(0) == 7


def test_state_round_trips():
    views = three_nodes()
    views.announce(receiver=1, node=2, round_idx=3, index=0, leave=False)
    saved = views.state()
    views.apply_pending(1)
    restored = Views(3, np.zeros(3, dtype=bool))
    restored.restore(saved)
    assert restored.pending == {1: {2: (3, 0)}}
    assert 2 not in restored.candidates(1, 3, 10)
