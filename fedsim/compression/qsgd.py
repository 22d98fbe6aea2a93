"""QSGD: each message quantised to s levels of its norm, by stochastic rounding."""

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
    its fractional part (one uniform per coordinate from (seed, round, sender)): unbiased,
    with E||Q(v) - v||^2 <= min(d/s^2, sqrt(d)/s) ||v||^2 (Alistarh et al., "QSGD:
    Communication-Efficient SGD via Gradient Quantization and Encoding", NeurIPS 2017).
    ``biased_scaling`` divides by tau = 1 + min(d/s^2, sqrt(d)/s), a contraction of quality
    1/tau, as the CHOCO code's ``qsgd_quantize(..., is_biased=True)`` (Koloskova, Stich and
    Jaggi, ICML 2019).  Sent fixed-width: a float32 norm, then per value a sign bit and
    ceil(log2(s + 1)) bits of level (Elias coding, data-dependent, is not counted).
    """

    def __init__(
        self, levels: int = 15, biased_scaling: bool = False, error_feedback: bool = False
    ) -> None:
        check(levels >= 1, f"compression.levels={levels} must be >= 1")
        super().__init__(error_feedback)
        self.levels, self.biased_scaling = levels, biased_scaling

    def compress(self, values: torch.Tensor, outgoing: Outgoing) -> torch.Tensor:
        num_parameters = values.shape[1]
        norm = torch.linalg.vector_norm(values, dim=1, keepdim=True)
        scaled = values.abs() / torch.where(norm > 0, norm, 1) * self.levels
        lower = scaled.floor()
        draws = outgoing.uniform(rng.COMPRESSION, num_parameters, values.device)
        # |v_j| / ||v|| may round a hair above 1: no level above s is encodable.
        level = (lower + (draws < scaled - lower).to(values.dtype)).clamp_(max=self.levels)
        decoded = norm * values.sign() * level / self.levels
        return decoded / self.tau(num_parameters) if self.biased_scaling else decoded

    def tau(self, num_parameters: int) -> float:
        """1 + the variance bound min(d/s^2, sqrt(d)/s) of messages of ``num_parameters``."""
        s = self.levels
        return 1 + min(num_parameters / s**2, math.sqrt(num_parameters) / s)

    def wire_bytes(self, num_parameters: int) -> int:
        bits = 1 + math.ceil(math.log2(self.levels + 1))
        return VALUE_BYTES + math.ceil(num_parameters * bits / 8)
