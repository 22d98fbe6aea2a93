"""Top-k sparsification: each message keeps its k coordinates of largest magnitude."""

from __future__ import annotations

from typing import Literal

import torch

from fedsim.compression.base import (
    INDEX_FORMS,
    VALUE_BYTES,
    Compressor,
    check_sparsity,
    index_bytes,
    kept_count,
)
from fedsim.errors import check
from fedsim.messages import Outgoing


class TopK(Compressor):
    """Keep the ``k`` entries of largest magnitude of each message (or ``ratio`` of them,
    rounded up) and zero the rest; ties go to the lower index, so exactly k are kept.
    Sent as k float32 values and which coordinates they are: k indices of 32 bits
    (``indices=int32``, decentralizepy's TopK) or of ceil(log2 d) bits (``packed``), a
    d-bit presence bitmap (``bitmap``), or the smaller of packed and bitmap (``best``,
    an encoder that picks per message; the sizes are fixed by k and d, so one form wins
    every message of a link).  Biased: pair it with error feedback (Stich, Cordonnier and
    Jaggi, "Sparsified SGD with Memory", NeurIPS 2018) or EF21.
    """

    def __init__(
        self,
        ratio: float | None = 0.01,
        k: int | None = None,
        indices: Literal["int32", "packed", "bitmap", "best"] = "int32",
        error_feedback: bool = False,
        ef21: bool = False,
        downlink: bool = False,
    ) -> None:
        check_sparsity("topk", ratio, k)
        check(
            indices in INDEX_FORMS,
            f"compression.indices={indices} is not one of: {', '.join(INDEX_FORMS)}",
        )
        super().__init__(error_feedback, ef21, downlink)
        self.ratio, self.k, self.indices = ratio, k, indices

    def compress(self, values: torch.Tensor, outgoing: Outgoing) -> torch.Tensor:
        kept = kept_count(values.shape[1], self.ratio, self.k)
        magnitudes = values.abs()
        threshold = magnitudes.topk(kept, dim=1).values[:, -1:]  # each row's k-th largest
        above = magnitudes > threshold
        # Of the entries at the threshold, the lowest-indexed ones fill the k places left:
        # all of them but in the rows where more tie than places are left (counted there
        # only: the int64 count of a whole (k, d) block was the peak of a compressed round).
        tied = magnitudes == threshold
        left = kept - above.sum(dim=1, keepdim=True)
        keep = above | tied
        crowded = (tied.sum(dim=1, keepdim=True) > left)[:, 0].nonzero()[:, 0]
        if len(crowded):
            first = tied[crowded].cumsum(dim=1) <= left[crowded]
            keep[crowded] = above[crowded] | (tied[crowded] & first)
        return torch.where(keep, values, torch.zeros((), dtype=values.dtype))

    def wire_bytes(self, num_parameters: int) -> int:
        kept = kept_count(num_parameters, self.ratio, self.k)
        return VALUE_BYTES * kept + index_bytes(kept, num_parameters, self.indices)
