"""Sign flipping: a Byzantine node sends its own message negated and scaled; in federated
learning the flipped update reflects its model about the server's, and one flipper with a
large scale breaks the mean but not the median (spec byzantine.md §5.1)."""

import numpy as np
import pytest
import torch
from helpers import final_accuracy

from fedsim.attacks.sign_flip import SignFlip
from fedsim.messages import MessageTransforms, Outgoing


def flipping(*nodes: int, scale: float = 1.0) -> SignFlip:
    attack = SignFlip(scale=scale, nodes=list(nodes))
    attack.prepare(num_nodes=3, seed=0)
    return attack


def outgoing(*senders: int, link: str = "uplink") -> Outgoing:
    return Outgoing(np.array(senders), link, round_idx=0, seed=0, num_nodes=3)


def test_an_upload_at_scale_one_arrives_as_the_model_reflected_about_the_servers():
    """Server x = (1, 1); client 0 trained to y = (3, -1) and sends x + (x - y) = (-1, 3)."""
    server = torch.tensor([[1.0, 1.0]]).expand(2, 2)
    trained = torch.tensor([[3.0, -1.0], [0.5, 2.0]])
    received = MessageTransforms.of([flipping(0)]).apply(trained, outgoing(0, 1), server)
    assert received.tolist() == [[-1.0, 3.0], [0.5, 2.0]]


def test_a_gossip_model_is_negated_and_scaled_and_honest_ones_pass():
    models = torch.tensor([[1.0, -4.0], [2.0, 3.0], [0.0, 7.0]])
    received = flipping(1, scale=2.0)(models, outgoing(0, 1, 2, link="d2d"))
    assert received.tolist() == [[1.0, -4.0], [-4.0, -6.0], [0.0, 7.0]]
    assert models[1].tolist() == [2.0, 3.0]  # the sent rows are not written in place


def test_a_step_without_attackers_passes_as_it_is():
    models = torch.tensor([[1.0, -4.0], [0.0, 7.0]])
    assert flipping(1)(models, outgoing(0, 2, link="d2d")) is models


@pytest.mark.slow
def test_one_large_flipper_breaks_the_mean_but_not_the_median(tmp_path):
    """Spec §5.1: one of 12 clients flips at scale 100; attack-free 0.82 after 4 rounds,
    mean 0.10 (chance), median 0.80."""
    flipper = ("attack=sign_flip", "attack.nodes=[0]", "attack.scale=100")
    clean = final_accuracy(tmp_path, "clean")
    mean = final_accuracy(tmp_path, "mean", *flipper)
    median = final_accuracy(tmp_path, "median", *flipper, "aggregator=median")
    assert clean > 0.7 and mean < 0.2  # chance is 0.1 on ten digits
    assert abs(median - clean) < 0.05
