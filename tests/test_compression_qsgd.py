"""QSGD: levels of the whole message's norm (or of each bucket's) by stochastic rounding,
unbiased, its variance bound and the rescaled form's omega = 1/tau; fixed-width wire sizes;
per-sender randomness."""

import math

import numpy as np
import pytest
import torch

from fedsim import rng
from fedsim.compression.qsgd import QSGD
from fedsim.errors import ConfigError
from fedsim.messages import MessageTransforms, Outgoing

SENDERS = 10**4


def outgoing(*senders: int, round_idx: int = 0, seed: int = 0) -> Outgoing:
    return Outgoing(np.array(senders), "uplink", round_idx=round_idx, seed=seed, num_nodes=SENDERS)


def vector(d: int = 16) -> torch.Tensor:
    return torch.linspace(-1.0, 2.0, d, dtype=torch.float64) ** 3


def test_values_on_a_level_are_sent_exactly():
    """(3, -4, 0) has norm 5; with s = 5 the levels are 3, 4 and 0: no rounding to do."""
    values = torch.tensor([[3.0, -4.0, 0.0], [0.0, 0.0, 0.0]])
    decoded = QSGD(levels=5).compress(values, outgoing(0, 1))
    assert decoded.tolist() == [[3.0, -4.0, 0.0], [0.0, 0.0, 0.0]]


def test_a_value_rounds_up_with_probability_its_fraction_of_a_level():
    """(3, 4) with s = 1: 3/5 of the norm rounds up to 5 when the sender's uniform is below
    0.6, else down to 0; the uniforms are the sender's in its round."""
    values = torch.tensor([[3.0, 4.0]], dtype=torch.float64).expand(4, 2)
    decoded = QSGD(levels=1).compress(values, outgoing(0, 1, 2, 3, round_idx=7, seed=2))
    draws = rng.uniform(2, rng.COMPRESSION, 7, torch.arange(4), torch.arange(2)).double()
    assert decoded.tolist() == (5 * (draws < torch.tensor([0.6, 0.8]))).tolist()


def test_every_value_is_a_whole_number_of_levels_of_the_norm():
    values = torch.randn(20, 50, generator=torch.Generator().manual_seed(0)).double()
    decoded = QSGD(levels=3).compress(values, outgoing(*range(20)))
    norm = values.norm(dim=1, keepdim=True)
    levels = decoded.abs() * 3 / norm
    torch.testing.assert_close(levels, levels.round(), rtol=0, atol=1e-12)
    assert levels.max() <= 3 and (decoded * values >= 0).all()  # never flips a sign


@pytest.mark.parametrize("levels", [1, 4, 15])
def test_it_is_unbiased_with_variance_within_its_bound(levels):
    """Over 10^4 senders: the mean of Q(v) is v within 5 standard deviations, and
    E||Q(v) - v||^2 <= min(d/s^2, sqrt(d)/s) ||v||^2."""
    values = vector()[None].expand(SENDERS, -1)
    decoded = QSGD(levels=levels).compress(values, outgoing(*range(SENDERS)))
    step = values[0].norm() / levels  # a coordinate's spread is at most half a level
    assert ((decoded.mean(dim=0) - values[0]).abs() <= 5 * step / 2 / SENDERS**0.5).all()
    d, squared = values.shape[1], values[0].square().sum()
    variance = (decoded - values).square().sum(dim=1).mean()
    assert variance <= min(d / levels**2, math.sqrt(d) / levels) * squared


@pytest.mark.parametrize("levels", [1, 2, 15])
def test_the_rescaled_form_divides_by_tau_and_has_quality_one_over_tau(levels):
    """E||Q(v)/tau - v||^2 <= (1 - 1/tau) ||v||^2, tau = 1 + min(d/s^2, sqrt(d)/s)."""
    values = vector()[None].expand(SENDERS, -1)
    senders = outgoing(*range(SENDERS))
    plain = QSGD(levels=levels).compress(values, senders)
    rescaled = QSGD(levels=levels, biased_scaling=True).compress(values, senders)
    tau = 1 + min(16 / levels**2, 4 / levels)
    torch.testing.assert_close(rescaled, plain / tau, rtol=0, atol=0)
    error = (rescaled - values).square().sum(dim=1).mean()
    assert error <= (1 - 1 / tau) * values[0].square().sum()


def test_wire_size_is_the_norm_and_a_sign_and_level_per_value():
    """The spec's fixed width: s = 15 and d = 10^6 take 32 + 10^6 x 5 bits."""
    assert QSGD(levels=15).wire_bytes(10**6) * 8 == 32 + 10**6 * 5
    assert QSGD(levels=1).wire_bytes(10) == 4 + 3  # 2 bits each: 20 bits in 3 bytes
    assert QSGD(levels=255).wire_bytes(8) == 4 + 9  # 1 + 8 bits
    assert QSGD(levels=256).wire_bytes(8) == 4 + 10  # 1 + 9 bits


def test_a_message_is_the_same_alone_or_with_others_and_changes_with_the_round():
    values = torch.randn(4, 100, generator=torch.Generator().manual_seed(0))
    compressor = QSGD(levels=2)
    together = compressor.compress(values, outgoing(0, 1, 2, 3))
    assert torch.equal(together[2:3], compressor.compress(values[2:3], outgoing(2)))
    assert not torch.equal(together, compressor.compress(values, outgoing(0, 1, 2, 3, round_idx=1)))
    assert not torch.equal(together, compressor.compress(values, outgoing(0, 1, 2, 3, seed=1)))
    same = values[:1].expand(2, -1)
    assert not torch.equal(*compressor.compress(same, outgoing(0, 1)))  # senders draw apart


def test_error_feedback_loses_nothing_and_is_plain_sending_on_exact_levels():
    transforms = MessageTransforms.of([QSGD(levels=2, error_feedback=True)])
    (name,) = transforms.slot_names()
    states = {name: torch.zeros(3, 16, dtype=torch.float64)}
    meant, sent = torch.zeros(2, 16, dtype=torch.float64), torch.zeros(2, 16, dtype=torch.float64)
    for round_idx in range(6):
        update = vector()[None].expand(2, -1) * (round_idx - 2)
        meant += update
        sent += transforms.apply(update, outgoing(0, 2, round_idx=round_idx), states=states)
    torch.testing.assert_close(sent + states[name][[0, 2]], meant, rtol=0, atol=1e-12)
    assert states[name][1].abs().sum() == 0
    states = {name: torch.zeros(1, 3, dtype=torch.float64)}
    exact = MessageTransforms.of([QSGD(levels=5, error_feedback=True)])
    for round_idx in range(3):
        update = torch.tensor([[3.0, -4.0, 0.0]], dtype=torch.float64)
        assert torch.equal(
            exact.apply(update, outgoing(0, round_idx=round_idx), states=states), update
        )
        assert states[name].abs().sum() == 0


def test_each_bucket_is_quantised_by_its_own_norm():
    """(3, 4 | 6, 8 | -2) in buckets of 2, s = 1: norms 5, 10 and 2, so a value is 0 or its
    bucket's norm, rounded up when the sender's uniform is below |v_j| over that norm (0.6,
    0.8, 0.6, 0.8, 1); the whole message's norm, sqrt(129), appears nowhere."""
    values = torch.tensor([[3.0, 4.0, 6.0, 8.0, -2.0]], dtype=torch.float64).expand(4, 5)
    decoded = QSGD(levels=1, bucket_size=2).compress(values, outgoing(*range(4), round_idx=3))
    draws = rng.uniform(0, rng.COMPRESSION, 3, torch.arange(4), torch.arange(5)).double()
    norms = torch.tensor([5.0, 5.0, 10.0, 10.0, -2.0], dtype=torch.float64)
    fractions = torch.tensor([0.6, 0.8, 0.6, 0.8, 1.0], dtype=torch.float64)
    assert decoded.tolist() == (norms * (draws < fractions)).tolist()
    assert decoded[:, 4].eq(-2).all()  # a full level of its own bucket: sent exactly


def test_values_on_their_buckets_levels_are_sent_exactly():
    """(3, -4, 0 | 6, 8): norms 5 and 10, and with s = 5 every value is a whole level of its
    bucket's norm (3, 4, 0 and 3, 4), where a level of the whole norm sqrt(125) is not."""
    values = torch.tensor([[3.0, -4.0, 0.0, 6.0, 8.0]], dtype=torch.float64)
    assert torch.equal(QSGD(levels=5, bucket_size=3).compress(values, outgoing(0)), values)
    assert not torch.equal(QSGD(levels=5).compress(values, outgoing(0)), values)


@pytest.mark.parametrize("levels", [1, 4])
def test_buckets_are_unbiased_with_variance_within_their_bound(levels):
    """Over 10^4 senders, buckets of 5 of 16 coordinates (5, 5, 5, 1): the mean of Q(v) is v
    within 5 standard deviations (half a level of the coordinate's bucket), and
    E||Q(v) - v||^2 <= min(b/s^2, sqrt(b)/s) ||v||^2 with b = 5."""
    values = vector()[None].expand(SENDERS, -1)
    compressor = QSGD(levels=levels, bucket_size=5)
    decoded = compressor.compress(values, outgoing(*range(SENDERS)))
    norms = torch.cat([bucket.norm().expand(len(bucket)) for bucket in values[0].split(5)])
    torch.testing.assert_close(compressor.norms(values[:1])[0], norms, rtol=1e-12, atol=0)
    step = norms / levels
    assert ((decoded.mean(dim=0) - values[0]).abs() <= 5 * step / 2 / SENDERS**0.5).all()
    variance = (decoded - values).square().sum(dim=1).mean()
    assert variance <= min(5 / levels**2, math.sqrt(5) / levels) * values[0].square().sum()


def test_buckets_rescale_by_the_bucket_dimension():
    """tau = 1 + min(b/s^2, sqrt(b)/s) with b = 4 and s = 1: 1 + min(4, 2) = 3, not d's
    1 + min(16, 4) = 5."""
    values = vector()[None].expand(8, -1)
    senders = outgoing(*range(8))
    plain = QSGD(levels=1, bucket_size=4).compress(values, senders)
    rescaled = QSGD(levels=1, bucket_size=4, biased_scaling=True).compress(values, senders)
    assert QSGD(levels=1, bucket_size=4).tau(16) == 3 and QSGD(levels=1).tau(16) == 5
    torch.testing.assert_close(rescaled, plain / 3, rtol=0, atol=0)


@pytest.mark.parametrize("bucket_size", [16, 17, 1000])
@pytest.mark.parametrize("biased_scaling", [False, True])
def test_a_bucket_holding_the_whole_message_is_the_unbucketed_compressor(
    bucket_size, biased_scaling
):
    values = torch.randn(6, 16, generator=torch.Generator().manual_seed(1))
    senders = outgoing(*range(6), round_idx=2)
    whole = QSGD(levels=3, biased_scaling=biased_scaling)
    bucketed = QSGD(levels=3, bucket_size=bucket_size, biased_scaling=biased_scaling)
    assert torch.equal(bucketed.compress(values, senders), whole.compress(values, senders))
    assert bucketed.wire_bytes(16) == whole.wire_bytes(16) == 4 + 6  # 3 bits a value


def test_wire_size_is_a_norm_per_bucket_and_a_sign_and_level_per_value():
    """32 ceil(d/b) + d (1 + ceil(log2(s + 1))) bits: s = 15, d = 10^6, b = 512 take
    32 x 1954 + 10^6 x 5 bits; s = 1, d = 10, b = 3 four norms and 20 bits (3 bytes)."""
    assert QSGD(levels=15, bucket_size=512).wire_bytes(10**6) * 8 == 32 * 1954 + 10**6 * 5
    assert QSGD(levels=1, bucket_size=3).wire_bytes(10) == 4 * 4 + 3
    assert QSGD(levels=1, bucket_size=1).wire_bytes(10) == 4 * 10 + 3


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"levels": 0}, "compression.levels=0 must be >= 1"),
        ({"bucket_size": 0}, "compression.bucket_size=0 must be >= 1, or null for the whole"),
        (
            {"error_feedback": True, "ef21": True},
            "compression.error_feedback=true and compression.ef21=true are two error feedbacks",
        ),
    ],
)
def test_bad_settings_are_refused_in_one_line(settings, message):
    with pytest.raises(ConfigError, match=message):
        QSGD(**settings)
