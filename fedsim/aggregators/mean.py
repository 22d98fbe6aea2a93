"""The plain average: what the mixing step computed, unchanged."""

from __future__ import annotations

import torch

from fedsim.training.layout import ParameterLayout


class Mean:
    """Keep the (weighted) average of the mixing step as it is."""

    corrects = False
    combines_rows = False  # it finishes a weighted sum; it never sees the models
    weighs_clients = False  # it keeps the strategy's client weights (FedDisco sets its own)

    def corrects_on(self, link: str | None) -> bool:
        """Whether it finishes the averages received over ``link`` (d2d, uplink, downlink)."""
        return self.corrects

    def check_received(self, count: int) -> None:
        """Refuse too few models per receiver (``count``, the fewest): any number will do."""

    def assumed_byzantine(self) -> int | None:
        """How many Byzantine models among one receiver's it is set to withstand (a Krum's
        ``f``), or None when it assumes no number."""
        return None

    def tensors(self, layout: ParameterLayout) -> list[tuple[str, slice]]:
        """The tensors this aggregator rescales (none)."""
        return []

    def finish(
        self, merged: torch.Tensor, target_variance: torch.Tensor, layout: ParameterLayout
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``merged`` unchanged, with no correction factors."""
        return merged, merged.new_ones(len(merged), 0)
