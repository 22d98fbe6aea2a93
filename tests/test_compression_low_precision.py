"""Low precision: float16 and bfloat16 round to nearest (even on ties) and saturate; int8
quantises each message between its least and greatest value; wire sizes; error feedback."""

import numpy as np
import pytest
import torch

from fedsim.compression.low_precision import LowPrecision
from fedsim.errors import ConfigError
from fedsim.messages import MessageTransforms, Outgoing


def outgoing(*senders: int, round_idx: int = 0) -> Outgoing:
    return Outgoing(np.array(senders), "uplink", round_idx=round_idx, seed=0, num_nodes=50)


def test_float16_rounds_to_nearest_even_and_saturates():
    """float16 steps by 2^-10 above 1: 1 + 2^-11 is a tie, to 1; 1 + 3 x 2^-11 to 1 + 2^-9."""
    values = torch.tensor([[1 + 2**-11, 1 + 3 * 2**-11, 1 + 2**-10 + 2**-12, 7e4, -1e9, 0.1]])
    decoded = LowPrecision("float16").compress(values, outgoing(0))
    expected = [1.0, 1 + 2**-9, 1 + 2**-10, 65504.0, -65504.0, 0.0999755859375]
    assert decoded.tolist() == [expected]


def test_bfloat16_keeps_float32_range_with_eight_bits_of_precision():
    """bfloat16 steps by 2^-7 above 1 and by 2^9 above 2^16: 70000 goes to 137 x 512."""
    values = torch.tensor([[1 + 2**-8, 1 + 3 * 2**-8, 7e4, 1e30]])
    decoded = LowPrecision("bfloat16").compress(values, outgoing(0))
    assert decoded[0, :3].tolist() == [1.0, 1 + 2**-6, 137 * 512]
    assert abs(decoded[0, 3].item() / 1e30 - 1) <= 2**-9


def test_int8_puts_each_message_on_256_levels_from_its_least_to_its_greatest_value():
    """(-1, 0.5, 254) steps by 1 from -1: 0.5 is 1.5 steps up, a tie, to 2 (even): 1."""
    values = torch.tensor([[-1.0, 0.5, 254.0], [2.0, 2.0, 2.0]])
    decoded = LowPrecision("int8").compress(values, outgoing(0, 1))
    assert decoded.tolist() == [[-1.0, 1.0, 254.0], [2.0, 2.0, 2.0]]


def test_int8_is_within_half_a_step_and_keeps_the_extremes():
    values = torch.randn(20, 300, generator=torch.Generator().manual_seed(0)) * 3 + 1
    decoded = LowPrecision("int8").compress(values, outgoing(*range(20)))
    low, high = values.amin(dim=1, keepdim=True), values.amax(dim=1, keepdim=True)
    step = (high - low) / 255
    assert ((decoded - values).abs() <= step / 2 * (1 + 1e-5)).all()
    torch.testing.assert_close(decoded.amin(dim=1, keepdim=True), low, rtol=0, atol=0)
    torch.testing.assert_close(decoded.amax(dim=1, keepdim=True), high, rtol=1e-6, atol=1e-6)
    levels = (decoded - low) / step
    torch.testing.assert_close(levels, levels.round(), rtol=0, atol=1e-3)


@pytest.mark.parametrize("dtype, bound", [("float16", 2**-11), ("bfloat16", 2**-8)])
def test_floats_are_within_half_a_unit_in_the_last_place(dtype, bound):
    values = torch.randn(10, 500, generator=torch.Generator().manual_seed(1)) * 100
    decoded = LowPrecision(dtype).compress(values, outgoing(*range(10)))
    assert ((decoded - values).abs() <= bound * values.abs()).all()


def test_wire_sizes_are_two_bytes_a_value_or_one_and_the_scale_and_offset():
    """The spec's 16 d bits for float16 and bfloat16, 8 d + 64 for int8."""
    d = 10**6
    assert LowPrecision("float16").wire_bytes(d) * 8 == 16 * d
    assert LowPrecision("bfloat16").wire_bytes(d) * 8 == 16 * d
    assert LowPrecision("int8").wire_bytes(d) * 8 == 8 * d + 64


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "int8"])
def test_a_message_is_the_same_alone_or_with_others(dtype):
    values = torch.randn(4, 100, generator=torch.Generator().manual_seed(0))
    values[0] *= 1e3  # another message's range does not change the int8 levels of row 2
    together = LowPrecision(dtype).compress(values, outgoing(0, 1, 2, 3))
    assert torch.equal(together[2:3], LowPrecision(dtype).compress(values[2:3], outgoing(2)))


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "int8"])
def test_error_feedback_loses_nothing(dtype):
    transforms = MessageTransforms.of([LowPrecision(dtype, error_feedback=True)])
    (name,) = transforms.slot_names()
    states = {name: torch.zeros(3, 50, dtype=torch.float64)}
    meant, sent = torch.zeros(2, 50, dtype=torch.float64), torch.zeros(2, 50, dtype=torch.float64)
    generator = torch.Generator().manual_seed(2)
    for round_idx in range(5):
        update = torch.randn(2, 50, generator=generator, dtype=torch.float64)
        meant += update
        sent += transforms.apply(update, outgoing(0, 2, round_idx=round_idx), states=states)
    torch.testing.assert_close(sent + states[name][[0, 2]], meant, rtol=0, atol=1e-12)
    assert states[name][1].abs().sum() == 0


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "int8"])
def test_error_feedback_on_exactly_representable_values_is_plain_sending(dtype):
    """The 256 quarters from -32 are float16 and bfloat16 values, and int8 levels (a
    message from -32 to 31.75 steps by 1/4)."""
    transforms = MessageTransforms.of([LowPrecision(dtype, error_feedback=True)])
    (name,) = transforms.slot_names()
    states = {name: torch.zeros(1, 256)}
    for round_idx in range(3):
        update = (torch.arange(256.0) / 4 - 32).flip(0)[None] * (-1) ** round_idx
        assert torch.equal(transforms.apply(update, outgoing(0), states=states), update)
        assert states[name].abs().sum() == 0


def test_an_unknown_dtype_is_refused_in_one_line():
    with pytest.raises(ConfigError, match="compression.dtype=int4 is not one of: float16, bf"):
        LowPrecision("int4")
