"""Random-k: k coordinates the receiver can draw itself (no indices sent), fixed by (seed,
round, sender) alone; its error in expectation; the unbiased form; error feedback."""

import numpy as np
import pytest
import torch

from fedsim import rng
from fedsim.compression.randomk import RandomK
from fedsim.errors import ConfigError
from fedsim.messages import MessageTransforms, Outgoing

D = 20


def outgoing(*senders: int, round_idx: int = 0, seed: int = 0) -> Outgoing:
    return Outgoing(np.array(senders), "d2d", round_idx=round_idx, seed=seed, num_nodes=10**4)


def vector() -> torch.Tensor:
    return torch.arange(1.0, D + 1, dtype=torch.float64) * (-1) ** torch.arange(D)


def test_the_kept_coordinates_are_the_k_smallest_uniforms_of_the_sender_and_round():
    """What a receiver computes from (seed, round, sender) alone picks the kept entries."""
    values = vector()[None].expand(2, D)
    decoded = RandomK(ratio=None, k=3).compress(values, outgoing(5, 7, round_idx=2, seed=1))
    for row, sender in enumerate((5, 7)):
        draws = rng.uniform(1, rng.COMPRESSION, 2, torch.tensor([sender]), torch.arange(D))[0]
        chosen = sorted(draws.argsort(stable=True)[:3].tolist())
        assert decoded[row].nonzero().flatten().tolist() == chosen
        assert decoded[row, chosen].tolist() == values[row, chosen].tolist()


def test_the_unbiased_form_scales_the_kept_values_by_d_over_k():
    values = vector()[None]
    plain = RandomK(ratio=None, k=5).compress(values, outgoing(3))
    scaled = RandomK(ratio=None, k=5, unbiased=True).compress(values, outgoing(3))
    assert scaled.tolist() == (4 * plain).tolist()


def test_exactly_k_are_kept_and_all_when_k_is_d():
    values = vector()[None].expand(100, D)
    decoded = RandomK(ratio=0.25).compress(values, outgoing(*range(100)))
    assert (decoded != 0).sum(dim=1).eq(5).all()
    everything = RandomK(ratio=1.0, unbiased=True).compress(values[:1], outgoing(0))
    assert torch.equal(everything, values[:1])


def test_every_coordinate_is_kept_equally_often_and_the_error_is_one_minus_k_over_d():
    """Over 10^4 senders: each coordinate kept k/d of the time, E||C(v) - v||^2 =
    (1 - k/d) ||v||^2, and the unbiased form averages to v."""
    senders = 10**4
    values = vector()[None].expand(senders, D)
    decoded = RandomK(ratio=None, k=4).compress(values, outgoing(*range(senders)))
    kept = (decoded != 0).double().mean(dim=0)
    assert (kept - 0.2).abs().max() < 5 * (0.2 * 0.8 / senders) ** 0.5
    error = (decoded - values).square().sum(dim=1).mean().item()
    assert error == pytest.approx(0.8 * values[0].square().sum().item(), rel=0.03)
    unbiased = RandomK(ratio=None, k=4, unbiased=True).compress(values, outgoing(*range(senders)))
    spread = 5 * values[0].abs() * (0.8 / 0.2 / senders) ** 0.5  # 5 standard deviations
    assert ((unbiased.mean(dim=0) - values[0]).abs() <= spread).all()


def test_a_message_is_the_same_alone_or_with_others_and_changes_with_the_round():
    values = torch.randn(4, 100, generator=torch.Generator().manual_seed(0))
    compressor = RandomK(ratio=0.1)
    together = compressor.compress(values, outgoing(0, 1, 2, 3))
    assert torch.equal(together[2:3], compressor.compress(values[2:3], outgoing(2)))
    later = compressor.compress(values, outgoing(0, 1, 2, 3, round_idx=1))
    other_seed = compressor.compress(values, outgoing(0, 1, 2, 3, seed=1))
    kept = [(message != 0).tolist() for message in (together, later, other_seed)]
    assert kept[0] != kept[1] and kept[0] != kept[2]
    assert kept[0][0] != kept[0][1]  # senders draw apart


def test_wire_size_is_the_kept_values_alone():
    """The spec's rand-k (shared seed): k b_v bits, 10^4 x 32 for d = 10^6 at 1%."""
    assert RandomK(ratio=0.01).wire_bytes(10**6) * 8 == 10**4 * 32
    assert RandomK(ratio=None, k=7).wire_bytes(1000) == 28


def test_error_feedback_loses_nothing_and_is_plain_sending_when_all_are_kept():
    transforms = MessageTransforms.of([RandomK(ratio=None, k=2, error_feedback=True)])
    (name,) = transforms.slot_names()
    states = {name: torch.zeros(3, D, dtype=torch.float64)}
    meant = torch.zeros(2, D, dtype=torch.float64)
    sent = torch.zeros(2, D, dtype=torch.float64)
    for round_idx in range(6):
        update = vector()[None].expand(2, D) * (round_idx + 1)
        meant += update
        sent += transforms.apply(update, outgoing(0, 2, round_idx=round_idx), states=states)
    torch.testing.assert_close(sent + states[name][[0, 2]], meant, rtol=0, atol=1e-12)
    assert states[name][1].abs().sum() == 0
    identity = MessageTransforms.of([RandomK(ratio=1.0, error_feedback=True)])
    states = {name: torch.zeros(1, D, dtype=torch.float64)}
    for round_idx in range(3):
        update = vector()[None] * round_idx
        assert torch.equal(identity.apply(update, outgoing(0), states=states), update)
        assert states[name].abs().sum() == 0


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"ratio": 0.1, "k": 3}, "compression=randomk takes one of compression.ratio and"),
        ({"ratio": 0.0}, r"compression.ratio=0.0 must be in \(0, 1\]"),
        ({"ratio": None, "k": -1}, "compression.k=-1 must be >= 1"),
    ],
)
def test_bad_settings_are_refused_in_one_line(settings, message):
    with pytest.raises(ConfigError, match=message):
        RandomK(**settings)
