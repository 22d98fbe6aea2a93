"""Inner-product manipulation: every Byzantine node sends -epsilon times the honest mean of
the step; a small epsilon keeps the mean's inner product with the honest mean positive, a
large one reverses it (spec byzantine.md §5.3)."""

import numpy as np
import pytest
import torch

from fedsim.attacks.ipm import IPM
from fedsim.messages import MessageTransforms, Outgoing


def manipulating(*nodes: int, epsilon: float = 0.5) -> IPM:
    attack = IPM(epsilon=epsilon, nodes=list(nodes))
    attack.prepare(num_nodes=6, seed=0)
    return attack


def outgoing(*senders: int, link: str = "d2d") -> Outgoing:
    return Outgoing(np.array(senders), link, round_idx=0, seed=0, num_nodes=6)


VALUES = torch.tensor([[1.0, 2.0], [3.0, 4.0], [50.0, -9.0], [5.0, 0.0], [-7.0, 7.0]])


def test_every_byzantine_node_sends_minus_epsilon_times_the_honest_mean():
    """Senders 0..4, nodes 2 and 4 attack: honest mean of (1, 2), (3, 4), (5, 0) is (3, 2)."""
    received = manipulating(2, 4)(VALUES, outgoing(0, 1, 2, 3, 4))
    assert received.tolist() == [[1.0, 2.0], [3.0, 4.0], [-1.5, -1.0], [5.0, 0.0], [-1.5, -1.0]]
    assert VALUES[2].tolist() == [50.0, -9.0]  # the sent rows are not written in place


def test_an_upload_arrives_as_the_servers_model_less_epsilon_times_the_honest_mean_update():
    """Server (1, 1); honest updates (2, 0) and (0, 4), mean (1, 2); node 1 gets (0.5, 0)."""
    server = torch.tensor([[1.0, 1.0]]).expand(3, 2)
    trained = torch.tensor([[3.0, 1.0], [9.0, 9.0], [1.0, 5.0]])
    attack = MessageTransforms.of([manipulating(1)])
    received = attack.apply(trained, outgoing(0, 1, 2, link="uplink"), server)
    assert received.tolist() == [[3.0, 1.0], [0.5, 0.0], [1.0, 5.0]]


def test_a_step_of_byzantine_senders_only_sends_their_own_messages():
    assert manipulating(2, 4)(VALUES[[2, 4]], outgoing(2, 4)).equal(VALUES[[2, 4]])


@pytest.mark.parametrize("epsilon, sign", [(0.1, 1.0), (100.0, -1.0)])
def test_the_means_inner_product_with_the_honest_mean_is_shrunk_or_reversed(epsilon, sign):
    """n = 5, f = 1: the mean is (4 - epsilon) / 5 times the honest mean."""
    values = torch.randn(5, 20, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    received = manipulating(3, epsilon=epsilon)(values, outgoing(0, 1, 2, 3, 4))
    honest = values[[0, 1, 2, 4]].mean(dim=0)
    torch.testing.assert_close(received.mean(dim=0), (4 - epsilon) / 5 * honest)
    assert torch.sign(received.mean(dim=0) @ honest) == sign
