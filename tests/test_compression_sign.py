"""Sign: one bit per coordinate (a zero as +1), scaled by the mean magnitude or not; its
quality ||v||_1^2 / (d ||v||^2); wire sizes; error feedback (EF-SignSGD)."""

import math

import numpy as np
import pytest
import torch

from fedsim.compression.sign import Sign
from fedsim.errors import ConfigError
from fedsim.messages import MessageTransforms, Outgoing


def outgoing(*senders: int, round_idx: int = 0) -> Outgoing:
    return Outgoing(np.array(senders), "d2d", round_idx=round_idx, seed=0, num_nodes=50)


VALUES = torch.tensor([[1.0, -2.0, 3.0, 0.0], [0.0, 0.0, 0.0, 0.0]])


def test_the_scaled_sign_is_the_mean_magnitude_times_the_signs():
    """||(1, -2, 3, 0)||_1 / 4 = 1.5; a zero is sent as +1; a zero message stays zero."""
    decoded = Sign().compress(VALUES, outgoing(0, 1))
    assert decoded.tolist() == [[1.5, -1.5, 1.5, 1.5], [0.0, 0.0, 0.0, 0.0]]


def test_the_unscaled_sign_is_plus_or_minus_one():
    decoded = Sign(scale="none").compress(VALUES, outgoing(0, 1))
    assert decoded.tolist() == [[1.0, -1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]]


def test_the_error_is_one_minus_the_quality_which_is_at_least_one_over_d():
    """||C(v) - v||^2 = ||v||^2 - ||v||_1^2 / d: (1, -2, 3, 0) loses 14 - 9 = 5."""
    decoded = Sign().compress(VALUES[:1].double(), outgoing(0))
    assert (decoded - VALUES[:1]).square().sum() == 5.0
    values = torch.randn(50, 30, generator=torch.Generator().manual_seed(0)).double()
    values[:10] *= torch.logspace(-4, 4, 30, dtype=torch.float64)
    error = (Sign().compress(values, outgoing(*range(50))) - values).square().sum(dim=1)
    squared = values.square().sum(dim=1)
    quality = values.abs().sum(dim=1) ** 2 / (30 * squared)
    torch.testing.assert_close(error, (1 - quality) * squared)
    assert (quality >= 1 / 30).all()


def test_wire_size_is_a_bit_per_value_and_the_scale():
    assert Sign().wire_bytes(10**6) * 8 == 10**6 + 32
    assert Sign(scale="none").wire_bytes(10**6) * 8 == 10**6
    assert Sign().wire_bytes(10) == math.ceil(10 / 8) + 4


def test_a_message_is_the_same_alone_or_with_others_and_in_any_round():
    values = torch.randn(4, 100, generator=torch.Generator().manual_seed(0))
    together = Sign().compress(values, outgoing(0, 1, 2, 3))
    assert torch.equal(together[2:3], Sign().compress(values[2:3], outgoing(2)))
    assert torch.equal(together, Sign().compress(values, outgoing(0, 1, 2, 3, round_idx=5)))


def test_error_feedback_loses_nothing_and_is_plain_sending_on_equal_magnitudes():
    transforms = MessageTransforms.of([Sign(error_feedback=True)])
    (name,) = transforms.slot_names()
    states = {name: torch.zeros(3, 4, dtype=torch.float64)}
    meant, sent = torch.zeros(2, 4, dtype=torch.float64), torch.zeros(2, 4, dtype=torch.float64)
    for round_idx in range(5):
        update = VALUES.double() * (round_idx + 1)
        meant += update
        sent += transforms.apply(update, outgoing(0, 2, round_idx=round_idx), states=states)
    torch.testing.assert_close(sent + states[name][[0, 2]], meant, rtol=0, atol=1e-12)
    assert states[name][1].abs().sum() == 0
    states = {name: torch.zeros(1, 4, dtype=torch.float64)}
    for round_idx in range(3):
        update = torch.tensor([[2.0, -2.0, 2.0, 2.0]], dtype=torch.float64) * round_idx
        assert torch.equal(transforms.apply(update, outgoing(0), states=states), update)
        assert states[name].abs().sum() == 0


def test_an_unknown_scale_is_refused_in_one_line():
    with pytest.raises(ConfigError, match="compression.scale=l2 is not one of: l1_mean, none"):
        Sign(scale="l2")
