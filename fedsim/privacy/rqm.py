"""``privacy=rqm``: the Randomized Quantization Mechanism (RQM) on FL uplinks, with an exact
Renyi-DP accountant and the quantised message's wire size.

RQM is Youn, Hu, Ziani and Abernethy, "Randomized Quantization is All You Need for
Differential Privacy in Federated Learning" (arXiv 2306.11913, FL-ICML 2023).  Its body was
not readable here (only its abstract: "randomly sub-sample feasible quantization levels, then
employ a randomized rounding procedure using these sub-sampled discrete levels").  The rule
below is the one re-implemented as a baseline by Cai, Zhang and Khalili ("Privacy-Aware
Randomized Quantization via Linear Programming", arXiv 2406.02599, UAI 2024), in their code
``osu-srml/DP_Linprog`` (``rqm.py``, ``genm.py``) [secondary-source]:

- m levels ``B_0 < ... < B_{m-1}`` evenly spaced on ``[-(c + margin), c + margin]``
  (``np.linspace(-c-delta, c+delta, m)``, ``rqm.py`` line 110), the input clipped to [-c, c];
- the two end levels always kept, every interior level kept independently with probability q
  (``calc_sample_pr``, ``rqm.py`` lines 12-28);
- the input rounded to the nearest kept level below or above it, up with probability
  ``(x - B_lo) / (B_hi - B_lo)`` (``calc_bins_pr``, ``genm.py`` lines 1-25): unbiased.

The privacy accounting is fedsim's own [derived], not the paper's theorem (unknown here; the
baseline's code measures pure DP, ``pri_loss``): a coordinate's output has a finite pmf that is
continuous and piecewise affine in the input, with breaks at the levels, so the Renyi
divergence (jointly convex in the two pmfs) is largest at a pair of breakpoints in [-c, c]:
it is computed exactly over those pairs, in log space.  Every coordinate draws its own coins,
so the RDP of a message is d times a coordinate's, and uploads add up; a client's epsilon is
for its whole update replaced (any two updates in [-c, c]^d) against the server that reads
it, with no amplification by client sampling, converted by ``eps = min_alpha RDP(alpha) +
log(1/delta) / (alpha - 1)`` (Mironov 2017, Proposition 3), or the pure-DP bound if smaller.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from scipy.special import logsumexp

from fedsim import rng
from fedsim.errors import check
from fedsim.federation import Federation
from fedsim.messages import MessageTransform, Outgoing
from fedsim.plans import RoundPlan

ORDERS = (1.25, 1.5, 1.75, 2, 2.5, 3, 4, 5, 6, 8, 10, 12, 16, 20, 24, 32, 48, 64, 128, 256, 512)


def level_grid(levels: int, clip: float, margin: float) -> np.ndarray:
    """The m evenly spaced levels on ``[-(clip + margin), clip + margin]``."""
    return np.linspace(-(clip + margin), clip + margin, levels)


def _times(count: np.ndarray | int, log_factor: float) -> np.ndarray:
    """``count * log_factor`` with ``0 * log 0 = 0`` (no level dropped when q = 1)."""
    count = np.asarray(count, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return np.where(count == 0, 0.0, count * log_factor)


def log_output_pmf(value: float, grid: np.ndarray, keep: float) -> np.ndarray:
    """log P(output = B_k), k = 0..m-1, for input ``value`` in [B_0, B_{m-1}]: in O(m^2) by
    summing over the nearest kept level below (l <= j) and above (r > j), j the cell of the
    value, whose probabilities are truncated geometric (``calc_sample_pr``)."""
    size = len(grid)
    cell = int(min(max(np.searchsorted(grid, value, side="right") - 1, 0), size - 2))
    log_keep = math.log(keep)
    log_drop = math.log1p(-keep) if keep < 1 else -math.inf
    below, above = np.arange(cell + 1), np.arange(cell + 1, size)
    log_below = np.where(below == 0, 0.0, log_keep) + _times(cell - below, log_drop)
    log_above = np.where(above == size - 1, 0.0, log_keep) + _times(above - cell - 1, log_drop)
    with np.errstate(divide="ignore"):
        log_gap = np.log(grid[above][None, :] - grid[below][:, None])
        down = np.log(grid[above] - value)[None, :] - log_gap  # log P(round to B_l | l, r)
        up = np.log(value - grid[below])[:, None] - log_gap
    log_pmf = np.empty(size)
    log_pmf[: cell + 1] = log_below + logsumexp(log_above[None, :] + down, axis=1)
    log_pmf[cell + 1 :] = log_above + logsumexp(log_below[:, None] + up, axis=0)
    return log_pmf


def worst_inputs(grid: np.ndarray, clip: float) -> np.ndarray:
    """The inputs where some pair attains the largest divergence: the clip range's ends and
    the levels inside it (the breaks of the pmf's piecewise-affine dependence on the input)."""
    inside = grid[(grid > -clip) & (grid < clip)]
    return np.unique(np.concatenate([[-clip, clip], inside]))


def renyi_divergence(
    log_p: np.ndarray, log_q: np.ndarray, orders: float | tuple[float, ...]
) -> np.ndarray | float:
    """``D_a(P || Q) = log(sum_k p_k^a q_k^(1 - a)) / (a - 1)`` at each order a, in log space;
    infinite when P puts mass where Q puts none."""
    alphas = np.atleast_1d(np.asarray(orders, dtype=np.float64))
    if np.any(np.isfinite(log_p) & ~np.isfinite(log_q)):
        divergence = np.full(len(alphas), math.inf)
    else:
        support = np.isfinite(log_p)
        terms = alphas[:, None] * log_p[support] + (1 - alphas[:, None]) * log_q[support]
        divergence = logsumexp(terms, axis=1) / (alphas - 1)
    return float(divergence[0]) if np.ndim(orders) == 0 else divergence


def coordinate_privacy(
    levels: int, keep: float, clip: float, margin: float, orders: tuple[float, ...] = ORDERS
) -> tuple[np.ndarray, float]:
    """One coordinate's RDP curve (at ``orders``) and pure-DP epsilon: the largest divergence,
    and log-ratio, between the outputs of two inputs in [-clip, clip]."""
    grid = level_grid(levels, clip, margin)
    pmfs = [log_output_pmf(value, grid, keep) for value in worst_inputs(grid, clip)]
    rdp = np.zeros(len(orders))
    pure = 0.0
    for log_p in pmfs:
        for log_q in pmfs:
            rdp = np.maximum(rdp, renyi_divergence(log_p, log_q, orders))
            with np.errstate(invalid="ignore"):
                gaps = log_p - log_q  # inf - inf only where both are -inf: no output
            pure = max(pure, float(np.nanmax(np.where(np.isneginf(log_p), -math.inf, gaps))))
    return rdp, pure


def epsilon_of(rdp: np.ndarray, orders: tuple[float, ...], delta: float) -> float:
    """(eps, delta)-DP of a mechanism with RDP curve ``rdp``: min over the orders of
    ``rdp + log(1/delta) / (order - 1)`` (Mironov 2017, Proposition 3)."""
    return float(np.min(rdp + math.log(1 / delta) / (np.asarray(orders) - 1)))


class RandomizedQuantizer(MessageTransform):
    """The uplink transform: each coordinate of a client's update clipped to [-c, c] and sent
    as one of the m levels (the mechanism in :mod:`fedsim.privacy.rqm`); the server decodes
    the level, so it receives ``B_index``.  The coins (the kept levels, the rounding) are
    the client's own: in the simulation a pure function of (seed, round, step, client,
    coordinate), never shared with another node nor used by the receiver.  Wire size:
    ``ceil(log2 m)`` bits per coordinate (c, margin and m are settings both ends know)."""

    links = ("uplink",)

    def __init__(self, levels: int, keep: float, clip: float, margin: float) -> None:
        self.levels, self.keep, self.clip, self.margin = levels, keep, clip, margin
        self.num_parameters: int | None = None

    def __call__(self, values: torch.Tensor, outgoing: Outgoing) -> torch.Tensor:
        rows, dim = values.shape
        top = self.clip + self.margin
        spacing = 2 * top / (self.levels - 1)
        clipped = values.clamp(-self.clip, self.clip)
        cell = ((clipped + top) / spacing).floor().clamp(0, self.levels - 2)
        draws = outgoing.uniform(rng.PRIVACY, 3 * dim, values.device).view(rows, 3, dim)
        draws = draws.to(values.dtype)
        if self.keep < 1:  # levels dropped in a row before the first kept one: geometric
            dropped = (torch.log1p(-draws[:, :2]) / math.log1p(-self.keep)).floor()
        else:
            dropped = torch.zeros_like(draws[:, :2])
        lower = cell - torch.minimum(dropped[:, 0], cell)
        upper = cell + 1 + torch.minimum(dropped[:, 1], self.levels - 2 - cell)
        low_value, high_value = lower * spacing - top, upper * spacing - top
        rounds_up = draws[:, 2] < (clipped - low_value) / (high_value - low_value)
        return torch.where(rounds_up, high_value, low_value)

    def wire_bytes(self, num_parameters: int) -> int:
        """``ceil(log2 m)`` bits a coordinate, rounded up to bytes; the run's message length
        is kept for the accountant, which composes over its coordinates."""
        self.num_parameters = num_parameters
        return math.ceil(num_parameters * math.ceil(math.log2(self.levels)) / 8)


class RandomizedQuantization:
    """``privacy=rqm``: every client quantises its uplink update with RQM (Youn et al.,
    arXiv 2306.11913; the rule as in Cai et al.'s code, see :mod:`fedsim.privacy.rqm`) and
    the server averages the decoded levels.  ``levels`` m >= 2, ``keep`` q in (0, 1] (q = 1:
    plain stochastic rounding, no privacy), ``clip`` c > 0 per coordinate, ``margin`` >= 0
    (the levels reach c + margin; 0 gives no privacy), ``delta`` of the reported (eps,
    delta).  Records ``privacy_epsilon_spent``: the worst client's, over its uploads so far.
    """

    per_example_gradients = False  # it encodes the uploads (message_transform), not gradients

    def __init__(
        self,
        levels: int = 4,
        keep: float = 0.5,
        clip: float = 0.01,
        margin: float = 0.01,
        delta: float = 1e-5,
    ) -> None:
        check(levels >= 2, f"privacy.levels={levels} must be an integer >= 2")
        check(0 < keep <= 1, f"privacy.keep={keep} must lie in (0, 1]")
        check(clip > 0, f"privacy.clip={clip} must be > 0")
        check(margin >= 0, f"privacy.margin={margin} must be >= 0")
        check(0 < delta < 1, f"privacy.delta={delta} must lie in (0, 1)")
        self.levels, self.keep, self.clip, self.margin, self.delta = (
            levels,
            keep,
            clip,
            margin,
            delta,
        )
        self.message_transform = RandomizedQuantizer(levels, keep, clip, margin)

    def prepare(
        self, first_plan: RoundPlan, federation: Federation, rounds: int, name: str
    ) -> None:
        """Refuse a strategy without client uploads; one coordinate's RDP curve, once."""
        self.num_nodes = federation.num_nodes
        uploads = any(step.messages(self.num_nodes).link == "uplink" for step in first_plan.steps)
        check(
            uploads,
            f"privacy=rqm quantises what clients upload to a server; {name}'s rounds upload "
            "nothing (use a server strategy such as strategy=fedavg)",
        )
        self.num_parameters = self.message_transform.num_parameters
        check(self.num_parameters is not None, "privacy=rqm was built without its messages")
        self.rdp, self.pure = coordinate_privacy(self.levels, self.keep, self.clip, self.margin)
        self.uploads = np.zeros(self.num_nodes, dtype=np.int64)

    def apply(self, plan: RoundPlan, round_idx: int) -> RoundPlan:
        """Count each client's uploads of the round (the plan is left as it is)."""
        for step in plan.steps:
            messages = step.messages(self.num_nodes)
            if messages.link == "uplink":
                np.add.at(self.uploads, messages.senders, 1)
        return plan

    def epsilon(self, uploads: int) -> tuple[float, float]:
        """(eps, delta) and pure-DP epsilon of ``uploads`` quantised messages of one client."""
        if uploads == 0:
            return 0.0, 0.0
        coordinates = uploads * self.num_parameters
        pure = coordinates * self.pure
        return min(epsilon_of(coordinates * self.rdp, ORDERS, self.delta), pure), pure

    def metrics(self, rounds_completed: int) -> dict[str, float]:
        return {"privacy_epsilon_spent": self.epsilon(int(self.uploads.max()))[0]}

    def state(self) -> dict[str, Any]:
        return {"uploads": self.uploads.tolist()}

    def restore(self, state: dict[str, Any]) -> None:
        self.uploads = np.asarray(state["uploads"], dtype=np.int64)

    def summary(self, rounds_completed: int) -> dict[str, Any]:
        """What the run's ``summary.json`` records about its privacy."""
        most = int(self.uploads.max())
        epsilon, pure = self.epsilon(most)
        return {
            "mechanism": "rqm",
            "levels": self.levels,
            "keep": self.keep,
            "clip": self.clip,
            "margin": self.margin,
            "delta": self.delta,
            "bits_per_coordinate": math.ceil(math.log2(self.levels)),
            "unit": "user (a client's whole update, any two in [-clip, clip]^d)",
            "threat_model": "an untrusted server: each client's coins are its own",
            "amplification": "none (client sampling is not credited)",
            "uploads_of_the_worst_client": most,
            "epsilon_spent": epsilon,
            "pure_epsilon_spent": pure,
            "coordinate_rdp": dict(zip(map(str, ORDERS), self.rdp.tolist(), strict=True)),
            "coordinate_pure_epsilon": self.pure,
            "sources": "mechanism: Cai et al.'s RQM baseline (osu-srml/DP_Linprog rqm.py, "
            "genm.py); accounting: exact RDP over the finite output (fedsim)",
        }
