"""Gaussian noise: a Byzantine node sends N(0, std^2 I), or its own message plus that noise,
drawn per (seed, round, sender); one such node among 12 breaks the mean but not the median
(spec byzantine.md §5.1, sigma = 200)."""

import numpy as np
import pytest
import torch
from helpers import final_accuracy

from fedsim import rng
from fedsim.attacks.gaussian import Gaussian
from fedsim.errors import ConfigError
from fedsim.messages import MessageTransforms, Outgoing


def noisy(*nodes: int, std: float = 2.0, around_own: bool = False) -> Gaussian:
    attack = Gaussian(std=std, around_own=around_own, nodes=list(nodes))
    attack.prepare(num_nodes=5, seed=0)
    return attack


def outgoing(*senders: int, round_idx: int = 0, seed: int = 0, link: str = "d2d") -> Outgoing:
    return Outgoing(np.array(senders), link, round_idx=round_idx, seed=seed, num_nodes=5)


def noise_of(sender: int, dim: int, round_idx: int = 0, seed: int = 0) -> torch.Tensor:
    """Sender's standard normal values of the attack stream, computed alone."""
    return outgoing(sender, round_idx=round_idx, seed=seed).normal(rng.ATTACK, dim, "cpu")[0]


MODELS = torch.tensor([[1.0, -4.0, 0.5], [2.0, 3.0, -1.0], [0.0, 1.0, 7.0]])


def test_a_byzantine_node_sends_std_times_its_own_normal_values_and_honest_ones_pass():
    received = noisy(1, std=2.0)(MODELS, outgoing(0, 1, 2))
    torch.testing.assert_close(received[1], 2.0 * noise_of(1, 3), rtol=0, atol=0)
    assert received[[0, 2]].tolist() == MODELS[[0, 2]].tolist()
    assert MODELS[1].tolist() == [2.0, 3.0, -1.0]


def test_around_own_adds_the_same_noise_to_the_message():
    alone = noisy(1, std=2.0)(MODELS, outgoing(0, 1, 2))
    around = noisy(1, std=2.0, around_own=True)(MODELS, outgoing(0, 1, 2))
    torch.testing.assert_close(around[1], MODELS[1] + alone[1], rtol=0, atol=0)
    assert noisy(1, std=0.0, around_own=True)(MODELS, outgoing(0, 1, 2)).equal(MODELS)


def test_an_upload_arrives_as_the_servers_model_plus_noise():
    server = torch.tensor([[10.0, 20.0, 30.0]]).expand(2, 3)
    sent = MODELS[:2]
    received = MessageTransforms.of([noisy(0, std=3.0)]).apply(
        sent, outgoing(0, 1, link="uplink"), server
    )
    torch.testing.assert_close(received[0], server[0] + 3.0 * noise_of(0, 3))
    assert received[1].tolist() == sent[1].tolist()


def test_the_noise_has_mean_zero_and_the_given_spread():
    forged = noisy(0, 3, std=200.0)(torch.zeros(2, 100_000), outgoing(0, 3))
    assert forged.mean().abs() < 2.0  # 200 / sqrt(2e5) = 0.45 standard error
    assert abs(forged.std().item() - 200.0) < 2.0


def test_a_senders_noise_is_its_own_alone_or_in_a_batch_and_new_each_round_and_seed():
    attack = noisy(0, 1, 2, 3)
    batch = attack(torch.zeros(4, 5), outgoing(3, 0, 2, 1))
    alone = attack(torch.zeros(1, 5), outgoing(2))
    torch.testing.assert_close(batch[2], alone[0], rtol=0, atol=0)
    assert not batch[0].equal(batch[1])  # senders 3 and 0 differ
    later = attack(torch.zeros(1, 5), outgoing(2, round_idx=1))
    reseeded = attack(torch.zeros(1, 5), outgoing(2, seed=1))
    assert not later.equal(alone) and not reseeded.equal(alone)


def test_a_negative_spread_is_refused_in_one_line():
    with pytest.raises(ConfigError, match=r"attack.std=-1.0 must be >= 0"):
        Gaussian(std=-1.0)


@pytest.mark.slow
def test_one_noisy_client_breaks_the_mean_but_not_the_median(tmp_path):
    """Spec §5.1: one of 12 clients sends N(0, 200^2 I) as its update; after 4 rounds
    attack-free 0.82, mean 0.30, median 0.80."""
    attack = ("attack=gaussian", "attack.nodes=[0]")
    clean = final_accuracy(tmp_path, "clean")
    mean = final_accuracy(tmp_path, "mean", *attack)
    median = final_accuracy(tmp_path, "median", *attack, "aggregator=median")
    assert clean > 0.7 and mean < clean - 0.25
    assert abs(median - clean) < 0.05
