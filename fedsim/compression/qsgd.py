"""QSGD: each message quantised to s levels of its norm (or of its buckets' norms), by
stochastic rounding."""

from __future__ import annotations

import math

import torch

from fedsim import rng
from fedsim.compression.base import VALUE_BYTES, Compressor
from fedsim.errors import check
from fedsim.messages import Outgoing


class QSGD(Compressor):
    """Quantise each message v to Q(v)_j = ||v|| sign(v_j) xi_j / s, with ||v|| the whole
    message's Euclidean norm and xi_j = floor(s |v_j| / ||v||) rounded up with probability
    its fractional part (one uniform per coordinate from (seed, round, step, sender)):
    unbiased, with E||Q(v) - v||^2 <= min(d/s^2, sqrt(d)/s) ||v||^2 (Alistarh et al.,
    "QSGD: Communication-Efficient SGD via Gradient Quantization and Encoding", NeurIPS
    2017).

    With ``bucket_size`` b, as the paper's bucketed QSGD, the message is cut into
    consecutive buckets of b coordinates (the last may be shorter), each quantised with its
    own norm in place of ||v||; a coordinate draws the same uniform as unbucketed, and a
    bucket of b >= d is the whole message.  Each bucket keeps the bound with b for d, so
    the message does: E||Q(v) - v||^2 <= min(b/s^2, sqrt(b)/s) ||v||^2.

    ``biased_scaling`` divides by tau = 1 + min(b/s^2, sqrt(b)/s) (b = d without buckets),
    a contraction of quality 1/tau, as the CHOCO code's ``qsgd_quantize(..., is_biased=True)``
    (Koloskova, Stich and Jaggi, ICML 2019) with the bucket's dimension for the message's.

    Sent fixed-width, as the spec allows: a float32 norm per bucket, then per value a sign
    bit and ceil(log2(s + 1)) bits of level.  The paper's Elias coding is shorter, but its
    size depends on the values, while fedsim gives each link one size per message, known
    before the run (:meth:`wire_bytes` of d alone), for its byte counters and its clock.
    """

    def __init__(
        self,
        levels: int = 15,
        bucket_size: int | None = None,
        biased_scaling: bool = False,
        error_feedback: bool = False,
        ef21: bool = False,
        downlink: bool = False,
    ) -> None:
        check(levels >= 1, f"compression.levels={levels} must be >= 1")
        check(
            bucket_size is None or bucket_size >= 1,
            f"compression.bucket_size={bucket_size} must be >= 1, or null for the whole message",
        )
        super().__init__(error_feedback, ef21, downlink)
        self.levels, self.bucket_size, self.biased_scaling = levels, bucket_size, biased_scaling

    def compress(self, values: torch.Tensor, outgoing: Outgoing) -> torch.Tensor:
        num_parameters = values.shape[1]
        norm = self.norms(values)
        scaled = values.abs() / torch.where(norm > 0, norm, 1) * self.levels
        lower = scaled.floor()
        draws = outgoing.uniform(rng.COMPRESSION, num_parameters, values.device)
        # |v_j| / ||v|| may round a hair above 1: no level above s is encodable.
        level = (lower + (draws < scaled - lower).to(values.dtype)).clamp_(max=self.levels)
        decoded = norm * values.sign() * level / self.levels
        return decoded / self.tau(num_parameters) if self.biased_scaling else decoded

    def norms(self, values: torch.Tensor) -> torch.Tensor:
        """The norm each coordinate of ``values`` (k, d) is quantised by: its bucket's, (k, d),
        or the whole message's, (k, 1), when one bucket holds it."""
        rows, num_parameters = values.shape
        size = self.bucket_size
        if size is None or size >= num_parameters:
            return torch.linalg.vector_norm(values, dim=1, keepdim=True)
        padded = torch.nn.functional.pad(values, (0, -num_parameters % size))  # zeros: no norm
        norms = torch.linalg.vector_norm(padded.view(rows, -1, size), dim=2)
        return norms.repeat_interleave(size, dim=1)[:, :num_parameters]

    def bucket(self, num_parameters: int) -> int:
        """The coordinates of a full bucket of a message of ``num_parameters``."""
        return min(self.bucket_size or num_parameters, num_parameters)

    def tau(self, num_parameters: int) -> float:
        """1 + the variance bound min(b/s^2, sqrt(b)/s) of messages of ``num_parameters``,
        b their bucket's size."""
        s, size = self.levels, self.bucket(num_parameters)
        return 1 + min(size / s**2, math.sqrt(size) / s)

    def wire_bytes(self, num_parameters: int) -> int:
        buckets = math.ceil(num_parameters / self.bucket(num_parameters))
        bits = 1 + math.ceil(math.log2(self.levels + 1))
        return VALUE_BYTES * buckets + math.ceil(num_parameters * bits / 8)
