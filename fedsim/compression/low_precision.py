"""Low precision: each message sent as 16-bit floats or 8-bit integers."""

from __future__ import annotations

from typing import Literal

import torch

from fedsim.compression.base import VALUE_BYTES, Compressor
from fedsim.errors import check
from fedsim.messages import Outgoing

FLOATS = {"float16": torch.float16, "bfloat16": torch.bfloat16}
INT8_LEVELS = 255  # the steps between a message's least and greatest value


class LowPrecision(Compressor):
    """Send each value as a ``float16`` or ``bfloat16``, rounded to nearest (even on ties),
    values beyond the format's range saturating at its largest finite value; or as an
    ``int8``: linear quantisation of each message onto 256 evenly spaced levels from its
    least to its greatest value, rounded to nearest, sent with the offset (the least value)
    and the step as two float32.  Biased; the relative error of a float is at most 2^-11
    (float16) or 2^-8 (bfloat16), an int8 value's absolute error at most half a step.
    """

    def __init__(
        self,
        dtype: Literal["float16", "bfloat16", "int8"] = "float16",
        error_feedback: bool = False,
        ef21: bool = False,
        downlink: bool = False,
    ) -> None:
        check(
            dtype in ("float16", "bfloat16", "int8"),
            f"compression.dtype={dtype} is not one of: float16, bfloat16, int8",
        )
        super().__init__(error_feedback, ef21, downlink)
        self.dtype = dtype

    def compress(self, values: torch.Tensor, outgoing: Outgoing) -> torch.Tensor:
        if self.dtype == "int8":
            return _int8(values)
        largest = torch.finfo(FLOATS[self.dtype]).max
        return values.clamp(-largest, largest).to(FLOATS[self.dtype]).to(values.dtype)

    def wire_bytes(self, num_parameters: int) -> int:
        if self.dtype == "int8":
            return num_parameters + 2 * VALUE_BYTES
        return 2 * num_parameters


def _int8(values: torch.Tensor) -> torch.Tensor:
    """Each row on 256 levels from its minimum by a step, both as the receiver reads them
    (float32)."""
    offset = values.amin(dim=1, keepdim=True).float().to(values.dtype)
    step = ((values.amax(dim=1, keepdim=True) - offset) / INT8_LEVELS).float().to(values.dtype)
    level = ((values - offset) / torch.where(step > 0, step, 1)).round_().clamp_(0, INT8_LEVELS)
    return offset + level * step
