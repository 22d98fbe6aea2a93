"""Random-k sparsification: each message keeps k coordinates drawn at random, its receivers
drawing the same ones."""

from __future__ import annotations

import torch

from fedsim import rng
from fedsim.compression.base import VALUE_BYTES, Compressor, check_sparsity, kept_count
from fedsim.messages import Outgoing


class RandomK(Compressor):
    """Keep ``k`` coordinates of each message (or ``ratio`` of them, rounded up), chosen
    uniformly without replacement, and zero the rest: the k smallest of d uniforms drawn
    from (seed, round, sender), ties to the lower index.  The receivers draw the same
    uniforms, so only the k float32 values are sent, no indices.  Biased, with
    E||C(v) - v||^2 = (1 - k/d)||v||^2; ``unbiased`` scales the kept values by d/k
    (variance d/k - 1 times ||v||^2), which CHOCO's analysis does not use (Stich,
    Cordonnier and Jaggi, "Sparsified SGD with Memory", NeurIPS 2018; Koloskova, Stich
    and Jaggi, ICML 2019).
    """

    def __init__(
        self,
        ratio: float | None = 0.01,
        k: int | None = None,
        unbiased: bool = False,
        error_feedback: bool = False,
        ef21: bool = False,
        downlink: bool = False,
    ) -> None:
        check_sparsity("randomk", ratio, k)
        super().__init__(error_feedback, ef21, downlink)
        self.ratio, self.k, self.unbiased = ratio, k, unbiased

    def compress(self, values: torch.Tensor, outgoing: Outgoing) -> torch.Tensor:
        num_parameters = values.shape[1]
        kept = kept_count(num_parameters, self.ratio, self.k)
        draws = outgoing.uniform(rng.COMPRESSION, num_parameters, values.device)
        chosen = draws.sort(dim=1, stable=True).indices[:, :kept]
        scale = num_parameters / kept if self.unbiased else 1.0
        return torch.zeros_like(values).scatter_(1, chosen, values.gather(1, chosen) * scale)

    def wire_bytes(self, num_parameters: int) -> int:
        return VALUE_BYTES * kept_count(num_parameters, self.ratio, self.k)
