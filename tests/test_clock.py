"""The simulated clock on three nodes (10, 20 and 30 examples) and, for FedAvg, one server.

Every network here has one site with 0.05 s links, so a server also sits 0.05 s from every
node (the median of a 1 x 1 latency matrix).
"""

import numpy as np
import scipy.sparse as sp
import torch
from numpy.testing import assert_allclose

from fedsim.plans import Average, Gossip, RoundPlan, Train
from fedsim.simulated.clock import Clock
from fedsim.simulated.network import Network
from fedsim.training.schedule import NodeData, local_batches

LATENCY = 0.05
MESSAGE_BYTES = 100
NODE_DATA = NodeData.from_shards([np.arange(10), np.arange(20), np.arange(30)])
EVERYONE = np.array([0, 1, 2])
SERVER = 3


def three_nodes(
    seconds_per_unit: float = 0.01,
    unit: str = "sample",
    upload: float = 1000.0,
    download: float = 1000.0,
) -> Network:
    """Three nodes computing ``seconds_per_unit`` per unit, links of 0.05 s, bytes/s as told."""
    return Network(
        seconds_per_unit=np.full(3, seconds_per_unit),
        unit=unit,
        site_latency=np.array([[LATENCY]]),
        node_site=np.zeros(3, dtype=np.int64),
        access_latency=np.zeros(3),
        upload=np.full(3, upload),
        download=np.full(3, download),
    )


def clock(network: Network, num_rows: int = 3, batch_size: int = 8) -> Clock:
    return Clock(network, num_rows, NODE_DATA, batch_size)


def advance(timer: Clock, *steps, barrier: bool = False) -> float:
    return timer.advance(RoundPlan(steps), MESSAGE_BYTES, barrier)


def test_an_epoch_takes_seconds_per_sample_times_examples():
    timer = clock(three_nodes(seconds_per_unit=0.01))
    advance(timer, Train(np.array([0, 1]), epochs=1))
    assert_allclose(timer.ready, [0.1, 0.2, 0.0])  # node 2 did not train
    advance(timer, Train(np.array([0, 1]), epochs=2))
    assert_allclose(timer.ready, [0.3, 0.6, 0.0])
    assert timer.now == timer.ready.max()


def test_per_step_compute_counts_mini_batches():
    # Batches of 8: 10 examples are 2 steps an epoch, 20 are 3; 0.5 s a step.
    timer = clock(three_nodes(seconds_per_unit=0.5, unit="step"))
    advance(timer, Train(np.array([0, 1]), epochs=1))
    assert_allclose(timer.ready, [1.0, 1.5, 0.0])
    advance(timer, Train(np.array([0, 1]), steps=3))
    assert_allclose(timer.ready, [2.5, 3.0, 0.0])


def test_steps_within_the_first_epoch_are_full_batches():
    timer = clock(three_nodes(seconds_per_unit=0.01))
    advance(timer, Train(np.array([0, 1]), steps=1))
    assert_allclose(timer.ready, [0.08, 0.08, 0.0])  # 8 samples each


def test_steps_past_an_epoch_cost_the_samples_they_hold():
    # The last batch of an epoch is short: with batches of 8, node 0 (10 examples) trains on
    # 8 + 2 + 8 = 18 samples in 3 steps and node 1 (20 examples) on 8 + 8 + 4 = 20.
    trained = local_batches(
        NODE_DATA, torch.tensor([0, 1]), seed=0, round_idx=0, batch_size=8, steps=3
    )
    assert trained.mask.sum(dim=(1, 2)).tolist() == [18.0, 20.0]
    timer = clock(three_nodes(seconds_per_unit=0.01))
    advance(timer, Train(np.array([0, 1]), steps=3))
    assert_allclose(timer.ready, [0.18, 0.20, 0.0])


def ring_gossip() -> Gossip:
    """A ring of three: every node sends to both others, weights 1/3."""
    return Gossip(sp.csr_array(np.full((3, 3), 1 / 3)))


def test_gossip_waits_for_the_last_neighbour_and_shares_the_upload():
    # Training ends at 0.1, 0.2, 0.3.  Each node sends to two neighbours, so each message gets
    # half of the 1000 B/s upload: 0.05 + 100 / 500 = 0.25 s on the wire.
    timer = clock(three_nodes(upload=1000.0, download=np.inf))
    advance(timer, Train(EVERYONE, epochs=1), ring_gossip())
    assert_allclose(timer.ready, [0.3 + 0.25, 0.3 + 0.25, 0.2 + 0.25])
    assert timer.now == 0.3 + 0.25


def test_a_barrier_starts_everyone_at_the_slowest_node():
    timer = clock(three_nodes(upload=1000.0, download=np.inf))
    now = advance(timer, Train(EVERYONE, epochs=1), ring_gossip(), barrier=True)
    assert_allclose(timer.ready, [0.55, 0.55, 0.55])
    assert now == timer.now


def test_zero_weights_are_not_messages():
    # Node 2 takes half of node 0's model; W[0, 2] is stored but 0, so 2 sends nothing to 0.
    rows, columns = np.array([0, 0, 1, 2, 2]), np.array([0, 2, 1, 0, 2])
    weights = sp.csr_array((np.array([1.0, 0.0, 1.0, 0.5, 0.5]), (rows, columns)), shape=(3, 3))
    timer = clock(three_nodes(upload=1000.0, download=np.inf))
    advance(timer, Train(EVERYONE, epochs=1), Gossip(weights))
    assert_allclose(timer.ready, [0.1, 0.2, 0.3])  # 0 -> 2 arrives at 0.25 < 0.3


def fedavg_round(sampled: list[int]) -> tuple[Average, Train, Average]:
    clients = np.array(sampled)
    return (
        Average(np.array([SERVER]), clients, np.array([1.0])),
        Train(clients, epochs=1),
        Average(clients, np.array([SERVER]), np.full(len(clients), 1 / len(clients))),
    )


def test_server_waits_for_the_last_client_and_others_keep_their_time():
    # Down 0.05 + 100 / 1000 = 0.15 s, up 0.05 + 100 / 500 = 0.25 s.
    timer = clock(three_nodes(upload=500.0, download=1000.0), num_rows=4)
    advance(timer, *fedavg_round([1]))
    assert_allclose(timer.ready, [0.0, 0.15 + 0.2, 0.0, 0.15 + 0.2 + 0.25])
    # From the server at 0.6: nodes 0 and 2 finish at 0.75 + 0.1 and 0.75 + 0.3.
    now = advance(timer, *fedavg_round([0, 2]))
    assert_allclose(timer.ready, [0.85, 0.35, 1.05, 1.05 + 0.25])
    assert now == timer.now == timer.ready[SERVER]


def test_a_server_sits_at_the_median_latency_from_each_site():
    network = Network(
        seconds_per_unit=np.full(3, 0.01),
        unit="sample",
        site_latency=np.array([[0.0, 0.1, 0.3], [0.1, 0.0, 0.2], [0.3, 0.2, 0.0]]),
        node_site=np.array([0, 1, 2]),
        access_latency=np.zeros(3),
        upload=np.full(3, np.inf),
        download=np.full(3, np.inf),
    )
    timer = clock(network, num_rows=4)
    advance(timer, Average(np.array([SERVER]), EVERYONE, np.array([1.0])))
    assert_allclose(timer.ready, [0.1, 0.1, 0.2, 0.0])


def test_a_protocol_that_keeps_its_own_time_moves_every_row_forward():
    timer = clock(three_nodes(seconds_per_unit=0.01))
    timed = RoundPlan((Train(EVERYONE, epochs=100),), finished_at=60.0)
    assert timer.advance(timed, MESSAGE_BYTES, barrier=False) == 60.0
    assert timer.ready.tolist() == [60.0, 60.0, 60.0]  # its steps take no extra time
    assert timer.advance(RoundPlan((), finished_at=30.0), MESSAGE_BYTES, False) == 60.0
    assert timer.ready.tolist() == [60.0, 60.0, 60.0]


def test_rows_ahead_of_the_protocol_are_not_moved_back():
    timer = clock(three_nodes(seconds_per_unit=0.01))
    advance(timer, Train(EVERYONE, epochs=1))
    timer.advance(RoundPlan((), finished_at=0.25), MESSAGE_BYTES, barrier=False)
    assert_allclose(timer.ready, [0.3, 0.3, 0.3])


def test_state_restores_the_ready_times():
    timer = clock(three_nodes(upload=1000.0, download=np.inf))
    advance(timer, Train(EVERYONE, epochs=1))
    saved = timer.state()
    advance(timer, ring_gossip())
    assert_allclose(saved["ready"], [0.1, 0.2, 0.3])  # a copy, not the live times
    resumed = clock(three_nodes(upload=1000.0, download=np.inf))
    resumed.restore(saved)
    advance(resumed, ring_gossip())
    assert resumed.ready.tolist() == timer.ready.tolist()
