"""Sign compression: one bit per coordinate, optionally scaled by the message's mean |v_j|."""

from __future__ import annotations

import math
from typing import Literal

import torch

from fedsim.compression.base import VALUE_BYTES, Compressor
from fedsim.errors import check
from fedsim.messages import Outgoing


class Sign(Compressor):
    """Send the sign of each coordinate, a zero as +1 (one bit has no third value), scaled
    by ||v||_1 / d (``scale=l1_mean``, a float32 sent with the bits: the scaled sign of
    EF-SignSGD, a contraction of quality ||v||_1^2 / (d ||v||^2) >= 1/d) or not at all
    (``none``: signSGD's {-1, +1}^d, Bernstein et al., ICML 2018).  Biased: pair it with
    error feedback (Karimireddy et al., "Error Feedback Fixes SignSGD and other Gradient
    Compression Schemes", ICML 2019).
    """

    def __init__(
        self,
        scale: Literal["l1_mean", "none"] = "l1_mean",
        error_feedback: bool = False,
        ef21: bool = False,
        downlink: bool = False,
    ) -> None:
        check(
            scale in ("l1_mean", "none"),
            f"compression.scale={scale} is not one of: l1_mean, none",
        )
        super().__init__(error_feedback, ef21, downlink)
        self.scale = scale

    def compress(self, values: torch.Tensor, outgoing: Outgoing) -> torch.Tensor:
        signs = torch.where(values < 0, -1.0, 1.0).to(values.dtype)
        if self.scale == "none":
            return signs
        return values.abs().mean(dim=1, keepdim=True) * signs

    def wire_bytes(self, num_parameters: int) -> int:
        bits = math.ceil(num_parameters / 8)
        return bits + VALUE_BYTES if self.scale == "l1_mean" else bits
