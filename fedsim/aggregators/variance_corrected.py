"""Variance-corrected averaging (Tian, Al-Ars, Kitsak, Hofstee, "Vanishing Variance Problem
in Fully Decentralized Neural-Network Systems", arXiv 2404.04616; authors' code DFL2 and
DFL_torch)."""

from __future__ import annotations

import math

import torch

from fedsim.errors import check
from fedsim.training.layout import ParameterLayout

TENSORS = ("weights", "all")
SCOPES = ("gossip", "all")


class VarianceCorrected:
    """After averaging, rescale each tensor around its own mean so that its variance equals
    the mean variance of the models that were received.

    ``th[l] <- (th[l] - mean) * sqrt((v_target + epsilon) / (v + epsilon)) + mean``, per
    tensor over all its elements.  ``tensors="weights"`` corrects the weight tensors of
    convolution and linear layers only (DFL2, the paper's simulator: biases never);
    ``"all"`` every tensor with more than one element (DFL_torch).  Variances are population
    variances (DFL2) unless ``unbiased``; DFL_torch uses ``unbiased=true, epsilon=1e-4``.  A
    tensor of zero variance is left as it is.  The paper corrects gossip merges, the models
    nodes receive from each other (``apply_to="gossip"``: every device-to-device average);
    ``"all"`` also corrects what a server averages (FedAvg's, S2S / S2A's servers').
    """

    corrects = True
    combines_rows = False  # it finishes a weighted sum; it never sees the models
    weighs_clients = False

    def __init__(
        self,
        tensors: str = "weights",
        epsilon: float = 0.0,
        unbiased: bool = False,
        apply_to: str = "gossip",
    ):
        check(
            tensors in TENSORS,
            f"aggregator.tensors={tensors} is not one of: {', '.join(TENSORS)}",
        )
        check(epsilon >= 0, f"aggregator.epsilon={epsilon} must be >= 0")
        check(
            apply_to in SCOPES,
            f"aggregator.apply_to={apply_to} is not one of: {', '.join(SCOPES)}",
        )
        self.which, self.epsilon, self.unbiased = tensors, epsilon, unbiased
        self.apply_to = apply_to

    def corrects_on(self, link: str | None) -> bool:
        """Gossip merges (device to device) always; a server's averages with ``apply_to=all``."""
        return link == "d2d" or self.apply_to == "all"

    def check_received(self, count: int) -> None:
        """Any number of received models will do."""

    def assumed_byzantine(self) -> None:
        """It assumes no number of Byzantine models."""
        return None

    def tensors(self, layout: ParameterLayout) -> list[tuple[str, slice]]:
        """The (name, columns) of every tensor this aggregator rescales."""
        chosen, offset = [], 0
        for name, shape in zip(layout.names, layout.shapes, strict=True):
            numel = math.prod(shape)
            weight = len(shape) >= 2 if self.which == "weights" else numel > 1
            if weight:
                chosen.append((name, slice(offset, offset + numel)))
            offset += numel
        return chosen

    def variances(self, rows: torch.Tensor, layout: ParameterLayout) -> torch.Tensor:
        """Per row, the variance of each corrected tensor: shape (rows, tensors)."""
        columns = [columns for _, columns in self.tensors(layout)]
        variances = [rows[:, part].var(dim=1, unbiased=self.unbiased) for part in columns]
        return torch.stack(variances, dim=1) if variances else rows.new_zeros(len(rows), 0)

    def finish(
        self, merged: torch.Tensor, target_variance: torch.Tensor, layout: ParameterLayout
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The corrected rows and each (row, tensor)'s factor sqrt(target / variance)."""
        corrected = merged.clone()
        factors = torch.ones_like(target_variance)
        for index, (_, columns) in enumerate(self.tensors(layout)):
            block = merged[:, columns]
            mean = block.mean(dim=1, keepdim=True)
            variance = block.var(dim=1, unbiased=self.unbiased) + self.epsilon
            target = target_variance[:, index] + self.epsilon
            factor = torch.where(variance > 0, (target / variance).sqrt(), torch.ones_like(target))
            corrected[:, columns] = (block - mean) * factor[:, None] + mean
            factors[:, index] = factor
        return corrected, factors
