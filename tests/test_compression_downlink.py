"""A compressed FL downlink (``compression.downlink=true``): the server sends each client its
own message, keyed by the client; with EF21, what the client holds moves towards the model;
the server's state for a client is kept apart from the client's uplink state; bytes count
the encoding once per client."""

import numpy as np
import torch
from helpers import started_backend, zero_logreg_task

from fedsim.compression.low_precision import LowPrecision
from fedsim.compression.qsgd import QSGD
from fedsim.compression.topk import TopK
from fedsim.messages import MessageTransforms
from fedsim.plans import Average, RoundPlan
from fedsim.traffic import TrafficCounters

SERVER = 3
MODEL = torch.tensor([1.0, -3.0, 0.5, 2.0, 0.0, 1 / 3])


def backend_with(*transforms):
    backend = started_backend(zero_logreg_task(), num_rows=4, zero=True)
    backend.messages = MessageTransforms.of(transforms)
    return backend


def broadcast(clients):
    return RoundPlan((Average(np.array([SERVER]), np.array(clients), np.ones(1)),))


def test_only_a_compressor_asked_to_compresses_the_downlink():
    assert "downlink" not in TopK().links and "downlink" in TopK(downlink=True).links
    backend = backend_with(LowPrecision("float16"))
    backend.params[SERVER] = MODEL
    backend.execute(broadcast([0, 1]), round_idx=0)
    assert torch.equal(backend.params[:2], MODEL.expand(2, -1))  # the model itself


def test_each_client_downloads_the_model_as_encoded():
    backend = backend_with(LowPrecision("float16", downlink=True))
    backend.params[SERVER] = MODEL
    backend.execute(broadcast([0, 2]), round_idx=0)
    rounded = MODEL.half().float()
    assert not torch.equal(rounded, MODEL)  # 1/3 is not a float16
    assert torch.equal(backend.params[[0, 2]], rounded.expand(2, -1))
    assert torch.equal(backend.params[1], torch.zeros(6))  # not sampled: nothing arrives


def test_with_ef21_a_client_keeps_what_it_downloaded_and_moves_it_towards_the_model():
    """Top-2 of 6: the first download is C(x); the next, g + C(x' - g) for g the first."""
    backend = backend_with(TopK(ratio=None, k=2, ef21=True, downlink=True))
    backend.params[SERVER] = MODEL
    backend.execute(broadcast([0]), round_idx=0)
    first = torch.tensor([0.0, -3.0, 0.0, 2.0, 0.0, 0.0])
    assert torch.equal(backend.params[0], first)
    held = backend.slot("message/TopK/estimate@downlink")
    assert torch.equal(held[0], first)
    assert not backend.slot("message/TopK/estimate").any()  # the client's uplink state
    backend.params[SERVER] = MODEL + torch.tensor([0.0, 0.0, 0.0, 0.0, 0.25, 0.0])
    backend.execute(broadcast([0]), round_idx=1)
    change = MODEL + torch.tensor([0.0, 0.0, 0.0, 0.0, 0.25, 0.0]) - first
    kept = change.abs().topk(2).indices
    expected = first.clone()
    expected[kept] += change[kept]
    assert torch.equal(backend.params[0], expected)
    assert torch.equal(expected, torch.tensor([1.0, -3.0, 0.5, 2.0, 0.0, 0.0]))


def test_each_client_draws_its_own_randomness():
    backend = backend_with(QSGD(levels=1, downlink=True))
    backend.params[SERVER] = torch.linspace(-1.0, 1.0, 6)
    backend.execute(broadcast([0, 1, 2]), round_idx=0)
    rows = backend.params[:3]
    assert len({tuple(row.tolist()) for row in rows}) > 1


def test_the_downlink_bytes_are_the_encoding_once_per_client():
    transforms = MessageTransforms.of([TopK(ratio=None, k=2, downlink=True)])
    dense = 6 * 4
    encoded = transforms.wire_bytes("downlink", dense, 6)
    assert encoded == 2 * 4 + 2 * 4  # two values, two int32 indices
    counters = TrafficCounters(3, 4, dense, {"downlink": encoded})
    counters.account(broadcast([0, 1, 2]))
    assert counters.metrics()["bytes_downlink_total"] == 3 * encoded


def test_a_client_uploads_its_update_from_what_it_downloaded():
    """The client cannot know the server's x, only its decoded x~_i: it sends C(y_i - x~_i),
    and the server, which knows x~_i, takes x~_i + C(y_i - x~_i).  Top-2 of a one-coordinate
    update is the update: the server gets y_i exactly (from x, it would not)."""
    backend = backend_with(TopK(ratio=None, k=2, downlink=True))
    backend.params[SERVER] = MODEL
    backend.execute(broadcast([0, 1]), round_idx=0)
    downloaded = backend.params[:2].clone()
    assert torch.equal(downloaded[0], torch.tensor([0.0, -3.0, 0.0, 2.0, 0.0, 0.0]))
    steps = torch.tensor([[0.0, 0.0, 0.0, 0.0, 0.5, 0.0], [0.0, 0.0, 0.25, 0.0, 0.0, 0.0]])
    backend.params[:2] = downloaded + steps
    upload = Average(np.array([0, 1]), np.array([SERVER]), np.array([0.5, 0.5]))
    backend.execute(RoundPlan((upload,)), round_idx=0)
    assert torch.equal(backend.params[SERVER], (downloaded + steps).mean(dim=0))
