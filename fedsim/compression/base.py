"""What every compressor shares: the encode-decode round trip, its wire size, error feedback."""

from __future__ import annotations

import math
from typing import Any

import torch

from fedsim.errors import check
from fedsim.messages import MessageTransform, Outgoing

VALUE_BYTES = 4  # a float32 value or norm
INDEX_FORMS = ("int32", "packed", "bitmap", "best")  # how a sparsifier says which it kept
MEASURE_BYTES = 2**24  # messages whose compression error is measured at once


class Compressor(MessageTransform):
    """A lossy encoding of each message (a client's update to the server, a gossip model),
    decoded by the receiver; subclasses give :meth:`compress` (the decoded message) and
    :meth:`wire_bytes` (its encoded size).

    With ``error_feedback`` each sender keeps what its encodings lost, its residual ``e``,
    and sends ``C(v + e)`` in place of ``C(v)``, keeping ``e <- v + e - C(v + e)``: nothing
    is lost, only delayed (Stich, Cordonnier and Jaggi, NeurIPS 2018; Karimireddy et al.,
    ICML 2019).

    With ``ef21`` each sender keeps instead an estimate ``g`` of its messages, the one its
    receivers hold, zero at first: it sends ``c = C(v - g)``, the receivers get ``g + c``
    and both keep ``g <- g + c``, so the first message arrives as ``C(v)`` (Richtarik,
    Sokolov and Fatkhullin, "EF21: A New, Simpler, Theoretically Better, and Practically
    Faster Error Feedback", NeurIPS 2021).  It is the same per-message rule as CHOCO's
    replicas: what arrives is the previous arrival moved towards ``v`` by a compressed step.

    The residual or the estimate is a per-row state, checkpointed with the run; one or the
    other, not both.

    It acts on the FL uplink and on gossip; with ``downlink`` on the FL downlink too, where
    the server sends each client its own message, keyed by the client (its randomness, and
    the server's residual or estimate for it, kept apart from the client's uplink state).
    A client's download is then ``C(x)``, the model itself compressed, or with ``ef21`` its
    estimate moved towards x, ``g_i + C(x - g_i)``: what the client holds from its last
    download (zero before its first).  Stateless clients with a compressed downlink
    therefore start training from what they decoded.

    Reports ``compression_error``, the mean over messages of ``||C(u) - u||^2 / ||u||^2``
    (u what was encoded: ``v``, ``v + e`` or ``v - g``; messages of zeros left out), since
    the last evaluation: the compressor's own loss, whichever feedback surrounds it.
    """

    def __init__(
        self, error_feedback: bool = False, ef21: bool = False, downlink: bool = False
    ) -> None:
        check(
            not (error_feedback and ef21),
            "compression.error_feedback=true and compression.ef21=true are two error "
            "feedbacks; set at most one of them true",
        )
        self.error_feedback, self.ef21 = error_feedback, ef21
        self.links = ("uplink", "d2d", "downlink") if downlink else ("uplink", "d2d")
        self.slots = ("residual",) if error_feedback else ("estimate",) if ef21 else ()
        self.error_sum, self.error_count = 0.0, 0

    def __call__(self, values: torch.Tensor, outgoing: Outgoing) -> torch.Tensor:
        if self.ef21:
            return self._ef21(values, outgoing)
        if self.error_feedback:
            values = values + outgoing.slots[self.slot("residual")]
        decoded = self.compress(values, outgoing)
        if self.error_feedback:
            outgoing.slots[self.slot("residual")] = values - decoded
        self._measure(values, decoded)
        return decoded

    def _ef21(self, values: torch.Tensor, outgoing: Outgoing) -> torch.Tensor:
        """EF21: the senders' estimates moved by the compressed difference, which the
        receivers get and the senders keep."""
        estimate = outgoing.slots[self.slot("estimate")]
        difference = values - estimate
        change = self.compress(difference, outgoing)
        self._measure(difference, change)
        received = estimate + change
        outgoing.slots[self.slot("estimate")] = received
        return received

    def _measure(self, values: torch.Tensor, decoded: torch.Tensor) -> None:
        """Add the messages' relative squared errors to the running sums, ``MEASURE_BYTES``
        of messages at a time (all at once, their temporaries made a compressed round's peak)."""
        rows = max(1, MEASURE_BYTES // max(1, values[:1].nbytes))
        for start in range(0, len(values), rows):
            block = values[start : start + rows]
            norms = block.square().sum(dim=1)
            errors = (decoded[start : start + rows] - block).square().sum(dim=1)
            sent = norms > 0
            self.error_sum += float((errors[sent] / norms[sent]).sum())
            self.error_count += int(sent.sum())

    def metrics(self) -> dict[str, float]:
        if not self.error_count:
            return {}
        error = self.error_sum / self.error_count
        self.error_sum, self.error_count = 0.0, 0
        return {"compression_error": error}

    def state(self) -> dict[str, Any]:
        return {"error_sum": self.error_sum, "error_count": self.error_count}

    def restore(self, state: dict[str, Any]) -> None:
        self.error_sum = float(state.get("error_sum", 0.0))
        self.error_count = int(state.get("error_count", 0))

    def compress(self, values: torch.Tensor, outgoing: Outgoing) -> torch.Tensor:
        """What the receivers decode of each row of ``values`` (k, d)."""
        raise NotImplementedError


def kept_count(num_parameters: int, ratio: float | None, k: int | None) -> int:
    """The coordinates a sparsifier keeps of ``num_parameters``: ``k``, else ``ratio`` of
    them rounded up (at least one, at most all)."""
    if k is None:
        # rounded first: 0.07 * 100 is 7.000000000000001 in floating point, which is 7
        k = math.ceil(round(float(ratio) * num_parameters, 6))
    return max(1, min(num_parameters, k))


def check_sparsity(name: str, ratio: float | None, k: int | None) -> None:
    """A sparsifier's ``ratio`` (in (0, 1]) or ``k`` (>= 1), exactly one of them."""
    check(
        (ratio is None) != (k is None),
        f"compression={name} takes one of compression.ratio and compression.k "
        f"(ratio={ratio}, k={k}); set the other to null",
    )
    check(
        ratio is None or 0 < ratio <= 1,
        f"compression.ratio={ratio} must be in (0, 1]",
    )
    check(k is None or k >= 1, f"compression.k={k} must be >= 1")


def index_bytes(count: int, num_parameters: int, indices: str) -> int:
    """Bytes that say which ``count`` of ``num_parameters`` coordinates a message keeps, in
    one of :data:`INDEX_FORMS`: 32 bits an index (``int32``), ceil(log2 d) bits an index
    (``packed``), a d-bit presence bitmap (``bitmap``), or the smaller of packed and bitmap
    (``best``, what an encoder choosing per message sends); bits rounded up to bytes."""
    packed = count * max(1, math.ceil(math.log2(num_parameters)))
    bits = {
        "int32": 32 * count,
        "packed": packed,
        "bitmap": num_parameters,
        "best": min(packed, num_parameters),
    }
    return math.ceil(bits[indices] / 8)
