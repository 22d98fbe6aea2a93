"""A Little Is Enough: Byzantine nodes send the honest mean shifted by a fraction of the spread."""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist
from typing import Literal

import torch

from fedsim.attacks.base import Attack
from fedsim.errors import check
from fedsim.messages import Outgoing


def z_max(num_messages: int, num_byzantine: int, form: Literal["paper", "code"]) -> float:
    """ALIE's shift, in honest standard deviations, for n messages of which f are Byzantine:
    with s = floor(n/2 + 1) - f supporters needed, Phi^-1((n - s)/n) in the ``paper`` form,
    Phi^-1((n - f - s)/(n - f)) in the EPFL ``code`` form (a proportion of the honest nodes
    only; smaller).  NaN when the proportion is not in (0, 1): too many Byzantine nodes for
    the formula (a majority by themselves, or a single honest node in the code form).
    """
    n, f = num_messages, num_byzantine
    supporters = math.floor(n / 2 + 1) - f
    if form == "paper":
        proportion = (n - supporters) / n
    else:
        proportion = (n - f - supporters) / (n - f) if n > f else math.nan
    return NormalDist().inv_cdf(proportion) if 0 < proportion < 1 else math.nan


class ALIE(Attack):
    """Every Byzantine node sends the same vector mu_H - z sigma_H, coordinate-wise, with
    mu_H and sigma_H the mean and the unbiased standard deviation (divisor n_H - 1, as the
    EPFL code's ``torch.std``) of the honest messages of the step (the updates from the
    server's model in federated learning, the models in gossip): a shift small enough to
    stay within the honest spread, which median, Krum and trimmed mean do not filter.
    ``z`` is explicit, else :func:`z_max` of the step's n messages and f Byzantine ones in
    ``z_form``.  Omniscient: it reads every honest message of the step.  A step with no
    honest message, or whose z is not finite (see :func:`z_max`), leaves each Byzantine
    message as it was computed; a single honest message has spread zero.
    Baruch, Baruch and Goldberg, "A Little Is Enough: Circumventing Defenses For Distributed
    Learning", NeurIPS 2019 (the EPFL code's ``ALittleIsEnoughAttack``).
    """

    omniscient = True

    def __init__(
        self,
        z: float | None = None,
        z_form: Literal["paper", "code"] = "code",
        fraction: float = 0.2,
        nodes: Sequence[int] | None = None,
    ) -> None:
        check(z_form in ("paper", "code"), f"attack.z_form={z_form} is not one of: paper, code")
        check(z is None or math.isfinite(z), f"attack.z={z} must be a finite number or null")
        super().__init__(fraction, nodes)
        self.z, self.z_form = z, z_form

    def shift(self, num_messages: int, num_byzantine: int) -> float:
        """The step's z: the explicit one, else :func:`z_max` in ``z_form``."""
        return self.z if self.z is not None else z_max(num_messages, num_byzantine, self.z_form)

    def forge(
        self, values: torch.Tensor, byzantine: torch.Tensor, outgoing: Outgoing
    ) -> torch.Tensor:
        honest = values[~byzantine]
        num_byzantine = int(byzantine.sum())
        z = self.shift(len(values), num_byzantine)
        if len(honest) == 0 or not math.isfinite(z):
            return values[byzantine]
        spread = honest.std(dim=0) if len(honest) > 1 else torch.zeros_like(honest[0])
        forged = honest.mean(dim=0) - z * spread
        return forged.expand(num_byzantine, -1).clone()
