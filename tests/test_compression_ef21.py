"""EF21 around any compressor (fedsim/compression/base.py): the receivers get the sender's
estimate moved by the compressed difference, the sender keeps what they got; identity-like
compressors pass messages through; top-2 by hand; its per-row state resumes with the run."""

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import compose_config
from helpers import whole_and_resumed

from fedsim.build import build_simulation
from fedsim.compression.qsgd import QSGD
from fedsim.compression.topk import TopK
from fedsim.config import options
from fedsim.errors import ConfigError
from fedsim.messages import MessageTransforms, Outgoing

ESTIMATE = "message/TopK/estimate"


def outgoing(*senders: int, round_idx: int = 0) -> Outgoing:
    return Outgoing(np.array(senders), "d2d", round_idx=round_idx, seed=0, num_nodes=3)


def test_the_estimate_is_a_per_row_slot_of_its_own():
    assert TopK(ef21=True).slots == ("estimate",)
    assert MessageTransforms.of([TopK(ef21=True)]).slot_names() == {ESTIMATE}
    assert TopK(error_feedback=True).slots == ("residual",) and TopK().slots == ()


def test_with_every_coordinate_kept_a_message_arrives_as_sent():
    """Top-k with k = d is the identity: C(v - g) = v - g, so g + C(v - g) = v (quarters,
    exact in floating point) and the estimate is the last message."""
    transforms = MessageTransforms.of([TopK(ratio=1.0, ef21=True)])
    states = {ESTIMATE: torch.zeros(3, 4)}
    for round_idx, message in enumerate([[1.0, -2.0, 0.5, 0.25], [3.0, 0.0, -0.75, 8.0]] * 2):
        sent = torch.tensor([message, [-x for x in message]])
        received = transforms.apply(sent, outgoing(0, 2, round_idx=round_idx), states=states)
        assert torch.equal(received, sent)
        assert torch.equal(states[ESTIMATE][[0, 2]], sent)
    assert states[ESTIMATE][1].abs().sum() == 0  # a row that sent nothing keeps zero


def test_top_2_by_hand_over_three_messages():
    """g = 0; v1 = (5, -1, 3, 0, 2): C(v1) = (5, 0, 3, 0, 0) arrives.
    v2 = (4, 2, 3, -3, 1): v2 - g = (-1, 2, 0, -3, 1), top-2 (0, 2, 0, -3, 0), so
    (5, 2, 3, -3, 0) arrives.  v3 = (4, 2, 1, -3, 2): v3 - g = (-1, 0, -2, 0, 2), top-2
    (0, 0, -2, 0, 2), so (5, 2, 1, -3, 2) arrives.  Each time the state is what arrived."""
    transforms = MessageTransforms.of([TopK(ratio=None, k=2, ef21=True)])
    states = {ESTIMATE: torch.zeros(1, 5)}
    messages = [[5.0, -1.0, 3.0, 0.0, 2.0], [4.0, 2.0, 3.0, -3.0, 1.0], [4.0, 2.0, 1.0, -3.0, 2.0]]
    arrivals = [[5.0, 0.0, 3.0, 0.0, 0.0], [5.0, 2.0, 3.0, -3.0, 0.0], [5.0, 2.0, 1.0, -3.0, 2.0]]
    for round_idx, (message, arrival) in enumerate(zip(messages, arrivals, strict=True)):
        sending = outgoing(0, round_idx=round_idx)
        received = transforms.apply(torch.tensor([message]), sending, states=states)
        assert received.tolist() == [arrival]
        assert states[ESTIMATE].tolist() == [arrival]


def test_the_error_is_the_compressors_on_the_difference_it_encodes():
    """The three differences above lose 5 of 39, 2 of 15 and 1 of 9 of their squared norm;
    a fourth message equal to the estimate sends a difference of zeros, left out."""
    compressor = TopK(ratio=None, k=2, ef21=True)
    slots = {ESTIMATE: torch.zeros(1, 5)}
    messages = [[5.0, -1.0, 3.0, 0.0, 2.0], [4.0, 2.0, 3.0, -3.0, 1.0], [4.0, 2.0, 1.0, -3.0, 2.0]]
    for message in [*messages, [5.0, 2.0, 1.0, -3.0, 2.0]]:
        sending = Outgoing(np.array([0]), "d2d", round_idx=0, seed=0, num_nodes=1, slots=slots)
        compressor(torch.tensor([message]), sending)
    assert slots[ESTIMATE].tolist() == [[5.0, 2.0, 1.0, -3.0, 2.0]]  # the fourth sent nothing
    error = (5 / 39 + 2 / 15 + 1 / 9) / 3
    assert compressor.metrics() == {"compression_error": pytest.approx(error)}


def test_an_upload_arrives_as_the_reference_plus_the_estimate_of_the_update():
    """The receivers hold the reference: EF21 acts on the update sent - reference."""
    transforms = MessageTransforms.of([TopK(ratio=None, k=1, ef21=True)])
    states = {ESTIMATE: torch.tensor([[0.0, 1.0, 0.0]])}
    reference = torch.tensor([[10.0, 10.0, 10.0]])
    sent = torch.tensor([[13.0, 11.0, 9.5]])  # update (3, 1, -0.5), minus g: (3, 0, -0.5)
    uplink = Outgoing(np.array([0]), "uplink", round_idx=0, seed=0, num_nodes=1)
    received = transforms.apply(sent, uplink, reference=reference, states=states)
    assert received.tolist() == [[13.0, 11.0, 10.0]]
    assert states[ESTIMATE].tolist() == [[3.0, 1.0, 0.0]]


def test_a_random_compressors_arrival_is_the_state_its_sender_keeps():
    """QSGD draws per sender and round; whatever it draws, receivers and sender agree."""
    transforms = MessageTransforms.of([QSGD(levels=1, ef21=True)])
    (name,) = transforms.slot_names()
    states = {name: torch.zeros(3, 20, dtype=torch.float64)}
    generator = torch.Generator().manual_seed(0)
    for round_idx in range(4):
        sent = torch.randn(2, 20, generator=generator, dtype=torch.float64)
        received = transforms.apply(sent, outgoing(0, 1, round_idx=round_idx), states=states)
        assert torch.equal(states[name][[0, 1]], received)
        assert not torch.equal(received, sent)


def test_an_ef21_gossip_run_resumes_bit_for_bit(tmp_path):
    """The estimate is a per-row slot like error feedback's residual, checkpointed alike."""
    config = compose_config(
        "num_nodes=12", "rounds=4", "eval_every=2", "checkpoint_every=1", "strategy=dpsgd",
        "topology=ring", "compression=topk", "compression.ratio=0.1", "compression.ef21=true",
    )  # fmt: skip
    assert ESTIMATE in build_simulation(config).messages.slot_names()
    first, second = whole_and_resumed(config, tmp_path, killed_after=1)
    assert np.isfinite(first.query("metric == 'loss'").value).all()
    pd.testing.assert_frame_equal(first, second)


@pytest.mark.parametrize("compressor", [name for name in options("compression") if name != "none"])
def test_every_compressor_takes_ef21_but_not_with_error_feedback(compressor):
    config = compose_config("num_nodes=12", f"compression={compressor}", "compression.ef21=true")
    (transform,) = build_simulation(config).messages.chain
    assert transform.slots == ("estimate",)
    with pytest.raises(ConfigError, match="error_feedback.*ef21|ef21.*error_feedback"):
        build_simulation(
            compose_config(
                "num_nodes=6",
                f"compression={compressor}",
                "compression.ef21=true",
                "compression.error_feedback=true",
            )  # fmt: skip
        )
