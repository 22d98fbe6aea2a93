"""Top-k: exactly k kept, ties to the lower index; its omega bound; wire sizes from the spec."""

import numpy as np
import pytest
import torch

from fedsim.compression.topk import TopK
from fedsim.errors import ConfigError
from fedsim.messages import Outgoing


def outgoing(*senders: int, round_idx: int = 0) -> Outgoing:
    return Outgoing(np.array(senders), "d2d", round_idx=round_idx, seed=0, num_nodes=4)


def test_the_k_largest_magnitudes_are_kept_and_ties_go_to_the_lower_index():
    values = torch.tensor([[1.0, -3.0, 3.0, 2.0, 3.0], [0.5, 0.0, -0.5, 0.5, 0.25]])
    decoded = TopK(ratio=None, k=2).compress(values, outgoing(0, 1))
    assert decoded.tolist() == [[0.0, -3.0, 3.0, 0.0, 0.0], [0.5, 0.0, -0.5, 0.0, 0.0]]


def test_exactly_k_are_kept_when_many_tie():
    values = torch.ones(3, 100)
    decoded = TopK(ratio=0.05).compress(values, outgoing(0, 1, 2))
    assert (decoded != 0).sum(dim=1).tolist() == [5, 5, 5]
    assert decoded[:, :5].eq(1).all() and decoded[:, 5:].eq(0).all()


@pytest.mark.parametrize("kept", [1, 10, 99, 100])
def test_the_error_is_at_most_one_minus_k_over_d_of_the_norm(kept):
    """||C(v) - v||^2 <= (1 - k/d) ||v||^2 for every v, not only on average."""
    values = torch.randn(50, 100, generator=torch.Generator().manual_seed(kept)).double()
    values[:10] *= torch.logspace(-3, 3, 100, dtype=torch.float64)  # skewed magnitudes
    decoded = TopK(ratio=None, k=kept).compress(values, outgoing(*range(50)))
    error = (decoded - values).square().sum(dim=1)
    assert (error <= (1 - kept / 100) * values.square().sum(dim=1) + 1e-12).all()


def test_ratio_keeps_its_share_rounded_up():
    values = torch.arange(1.0, 11.0)[None]
    assert (TopK(ratio=0.25).compress(values, outgoing(0)) != 0).sum() == 3  # ceil(2.5)
    assert (TopK(ratio=1.0).compress(values, outgoing(0)) == values).all()


def test_wire_sizes_match_the_spec_for_a_million_parameters_and_ten_thousand_kept():
    """Values as float32 (32 bits) and indices as int32 (32 bits) or packed ceil(log2 d) = 20
    bits: the packed form is the spec's 10^4 (32 + 20) = 520,000 bits."""
    d = 10**6
    assert TopK(ratio=None, k=10**4).wire_bytes(d) == 10**4 * (32 + 32) // 8 == 80_000
    assert TopK(ratio=0.01, indices="packed").wire_bytes(d) * 8 == 520_000
    assert TopK(ratio=None, k=3, indices="packed").wire_bytes(1000) == 12 + 4  # 30 bits: 4 bytes


def test_the_bitmap_form_is_the_values_and_a_bit_per_coordinate_and_best_the_smaller():
    """d = 10^6, k = 10^4: bitmap 10^4 x 32 + 10^6 = 1,320,000 bits, so the best is packed's
    520,000; d = 1000, k = 500: packed 500 x (32 + 10) = 21,000 bits, bitmap 500 x 32 + 1000
    = 17,000 bits, the best."""
    d, k = 10**6, 10**4
    assert TopK(ratio=None, k=k, indices="bitmap").wire_bytes(d) * 8 == 1_320_000
    assert TopK(ratio=None, k=k, indices="best").wire_bytes(d) * 8 == 520_000
    assert TopK(ratio=None, k=500, indices="packed").wire_bytes(1000) * 8 == 21_000
    assert TopK(ratio=None, k=500, indices="bitmap").wire_bytes(1000) * 8 == 17_000
    assert TopK(ratio=0.5, indices="best").wire_bytes(1000) * 8 == 17_000
    assert TopK(ratio=None, k=1, indices="bitmap").wire_bytes(9) == 4 + 2  # 9 bits: 2 bytes
    assert TopK(ratio=None, k=1, indices="best").wire_bytes(9) == 4 + 1  # 4 bits: 1 byte


def test_the_wire_form_changes_the_size_not_the_message():
    values = torch.randn(3, 40, generator=torch.Generator().manual_seed(0))
    int32, *others = (
        TopK(ratio=0.1, indices=form).compress(values, outgoing(0, 1, 2))
        for form in ("int32", "packed", "bitmap", "best")
    )
    assert all(torch.equal(int32, decoded) for decoded in others)


def test_a_message_is_the_same_alone_or_with_others():
    values = torch.randn(4, 30, generator=torch.Generator().manual_seed(0))
    together = TopK(ratio=0.1).compress(values, outgoing(0, 1, 2, 3))
    alone = TopK(ratio=0.1).compress(values[2:3], outgoing(2))
    assert torch.equal(together[2:3], alone)


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"ratio": 0.1, "k": 3}, "compression=topk takes one of compression.ratio and"),
        ({"ratio": None, "k": None}, "compression=topk takes one of compression.ratio and"),
        ({"ratio": 1.5}, r"compression.ratio=1.5 must be in \(0, 1\]"),
        ({"ratio": None, "k": 0}, "compression.k=0 must be >= 1"),
        (
            {"indices": "int64"},
            "compression.indices=int64 is not one of: int32, packed, bitmap, best",
        ),
        (
            {"error_feedback": True, "ef21": True},
            "compression.error_feedback=true and compression.ef21=true are two error feedbacks",
        ),
    ],
)
def test_bad_settings_are_refused_in_one_line(settings, message):
    with pytest.raises(ConfigError, match=message):
        TopK(**settings)
