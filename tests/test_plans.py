import numpy as np
import pytest
import scipy.sparse as sp

from fedsim.errors import ConfigError
from fedsim.plans import Aggregate, Average, Combining, Gossip, Merge, Push, Train


def pairs(messages):
    return sorted(zip(messages.senders.tolist(), messages.receivers.tolist(), strict=True))


def test_gossip_sends_one_message_per_off_diagonal_weight():
    weights = sp.csr_array(np.array([[0.5, 0.5, 0.0], [0.25, 0.5, 0.25], [0.0, 0.5, 0.5]]))
    messages = Gossip(weights).messages(3)
    # Node 1 sends to 0 and 2; nodes 0 and 2 send to 1 only; self-weights send nothing.
    assert pairs(messages) == [(0, 1), (1, 0), (1, 2), (2, 1)]
    assert messages.sent(3).tolist() == [1, 2, 1]
    assert messages.aggregations(3).tolist() == [1, 1, 1] and messages.link == "d2d"


def test_a_gossip_of_a_state_is_counted_as_one_of_models_and_names_its_slot():
    weights = sp.csr_array(np.array([[0.5, 0.5, 0.0], [0.25, 0.5, 0.25], [0.0, 0.5, 0.5]]))
    models, trackers = Gossip(weights), Gossip(weights, payload="tracker")
    assert pairs(trackers.messages(3)) == pairs(models.messages(3))
    assert trackers.messages(3).aggregations(3).tolist() == [1, 1, 1]
    assert trackers.slot_names() == {"tracker"} and models.slot_names() == set()
    assert trackers.working_rows(3, Combining(combines_rows=True)) == 0  # plain W, spare rows
    with pytest.raises(ConfigError, match="gossip of 'tracker' mixes it by plain W"):
        Gossip(weights, step_size=0.5, payload="tracker")


def test_a_zero_weight_sends_nothing_and_a_row_without_neighbours_does_not_aggregate():
    weights = sp.csr_array(np.array([[1.0, 0.0], [0.5, 0.5]]))
    weights.data[weights.data == 0.5] = [0.0, 1.0]  # an explicit zero stored in W
    messages = Gossip(weights).messages(2)
    assert pairs(messages) == [] and messages.aggregations(2).tolist() == [0, 0]


def test_average_counts_each_source_to_each_other_target():
    broadcast = Average(sources=np.array([3]), targets=np.array([0, 2]), weights=np.ones(1))
    assert broadcast.messages(3).sent(4).tolist() == [0, 0, 0, 2]
    assert broadcast.messages(3).aggregations(4).tolist() == [0, 0, 0, 0]  # one model: a copy
    assert broadcast.messages(3).link == "downlink"
    upload = Average(sources=np.array([0, 2]), targets=np.array([3]), weights=np.array([0.5, 0.5]))
    assert upload.messages(3).sent(4).tolist() == [1, 0, 1, 0]
    assert upload.messages(3).aggregations(4).tolist() == [0, 0, 0, 1]
    assert upload.messages(3).link == "uplink"
    among = Average(
        sources=np.array([0, 1]), targets=np.array([0, 1]), weights=np.array([0.5, 0.5])
    )
    assert pairs(among.messages(3)) == [(0, 1), (1, 0)] and among.messages(3).link == "d2d"
    assert among.messages(3).aggregations(4).tolist() == [1, 1, 0, 0]


def test_an_aggregate_sends_what_its_averages_send():
    first = Average(sources=np.array([0, 1]), targets=np.array([1]), weights=np.full(2, 0.5))
    second = Average(sources=np.array([1, 2]), targets=np.array([2]), weights=np.full(2, 0.5))
    messages = Aggregate((first, second)).messages(3)
    assert pairs(messages) == [(0, 1), (1, 2)]
    assert messages.aggregations(3).tolist() == [0, 1, 1] and messages.link == "d2d"


def test_training_sends_nothing():
    messages = Train(np.arange(3)).messages(3)
    assert messages.sent(3).tolist() == [0, 0, 0] and messages.link is None


def test_a_push_is_one_message_per_pair_and_a_merge_is_one_aggregation():
    push = Push(sources=np.array([0, 0, 2]), targets=np.array([1, 2, 1]), weights=np.ones(3))
    assert push.messages(3).sent(3).tolist() == [2, 0, 1]
    assert push.messages(3).aggregations(3).tolist() == [0, 0, 0]
    merge = Merge(nodes=np.array([1, 2]), self_weights=np.full(2, 0.5))
    assert merge.messages(3).aggregations(3).tolist() == [0, 1, 1]
    assert merge.messages(3).sent(3).tolist() == [0, 0, 0] and merge.messages(3).link is None


def test_fan_in_is_how_many_models_each_combiner_combines():
    """Gossip on the path 0 - 1 - 2 (own models among them); an average of three clients."""
    path = sp.csr_array(np.array([[2, 1, 0], [1, 1, 1], [0, 1, 2]]) / 3)
    assert Gossip(path).messages(3).fan_in.tolist() == [2, 3, 2]
    average = Average(np.array([0, 1, 2]), np.array([3]), np.full(3, 1 / 3))
    assert average.messages(3).fan_in.tolist() == [3]
    broadcast = Average(np.array([3]), np.array([0, 1, 2]), np.ones(1))
    assert broadcast.messages(3).fan_in.tolist() == []  # one model is not combined
    both = Aggregate((average, Average(np.array([0, 1]), np.array([2]), np.full(2, 0.5))))
    assert both.messages(3).fan_in.tolist() == [3, 2]
