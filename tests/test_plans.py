import numpy as np
import scipy.sparse as sp

from fedsim.plans import Average, Gossip, Train, messages_sent


def test_gossip_sends_one_message_per_off_diagonal_weight():
    weights = sp.csr_array(np.array([[0.5, 0.5, 0.0], [0.25, 0.5, 0.25], [0.0, 0.5, 0.5]]))
    # Node 1 sends to 0 and 2; nodes 0 and 2 send to 1 only; self-weights send nothing.
    assert messages_sent(Gossip(weights), 3).tolist() == [1, 2, 1]


def test_average_counts_each_source_to_each_other_target():
    broadcast = Average(sources=np.array([3]), targets=np.array([0, 2]), weights=np.ones(1))
    assert messages_sent(broadcast, 4).tolist() == [0, 0, 0, 2]
    upload = Average(sources=np.array([0, 2]), targets=np.array([3]), weights=np.array([0.5, 0.5]))
    assert messages_sent(upload, 4).tolist() == [1, 0, 1, 0]
    among = Average(
        sources=np.array([0, 1]), targets=np.array([0, 1]), weights=np.array([0.5, 0.5])
    )
    assert messages_sent(among, 4).tolist() == [1, 1, 0, 0]


def test_training_sends_nothing():
    assert messages_sent(Train(np.arange(3)), 3).tolist() == [0, 0, 0]


def test_a_push_is_one_message_per_pair_and_a_merge_is_one_aggregation():
    from fedsim.plans import Merge, Push, aggregations

    push = Push(sources=np.array([0, 0, 2]), targets=np.array([1, 2, 1]), weights=np.ones(3))
    assert messages_sent(push, 3).tolist() == [2, 0, 1]
    merge = Merge(nodes=np.array([1, 2]), self_weights=np.full(2, 0.5))
    assert aggregations(merge, 3).tolist() == [0, 1, 1]
    assert messages_sent(merge, 3).tolist() == [0, 0, 0]
