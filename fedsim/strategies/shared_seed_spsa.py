"""Shared-seed SPSA: all-to-all zeroth-order training that exchanges one scalar per sample."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from fedsim import rng
from fedsim.errors import check
from fedsim.plans import Average, RoundPlan, Traffic, Train
from fedsim.strategies.base import Federation, Strategy
from fedsim.training.transforms import LossAt, ZerothOrderTransform

FLOAT_BYTES = 4  # a float32 projected gradient
BYTE = 1  # a quantized one
LOG_STEPS = 8  # quantized codes per unit of ln|p|
LARGEST_CODE = 63  # |code| <= 63: sign and 7 bits, with 0 kept for p = 0: one byte


def perturbations(
    seed: int, round_idx: int, nodes: torch.Tensor, sample: int, num_parameters: int
) -> torch.Tensor:
    """The (nodes, d) standard normal directions z of ``sample`` of round ``round_idx``: a
    pure function of (seed, round, node, sample) (Box-Muller on :func:`fedsim.rng.uniform`),
    so that every machine regenerates any machine's z instead of receiving it."""
    counters = torch.arange(2 * num_parameters, device=nodes.device) + sample * 2 * num_parameters
    uniforms = rng.uniform(seed, rng.PROTOCOL, round_idx, nodes, counters)
    radius = torch.sqrt(-2.0 * torch.log1p(-uniforms[:, :num_parameters]))
    return radius * torch.cos(2.0 * math.pi * uniforms[:, num_parameters:])


def one_byte(projected: torch.Tensor) -> torch.Tensor:
    """The decoded value of the one-byte code of each projected gradient p: its sign and
    ``k = round(8 ln|p|)`` clipped to [-63, 63], decoded as ``sign(p) exp(k / 8)`` (0 stays
    0; 2 x 127 + 1 codes fit a byte; relative error at most e^(1/16) - 1 = 6.4% for
    e^-7.9 <= |p| <= e^7.9).  The paper's logarithmic code (app.py rounds 16 ln|p| clipped
    to [-127, 127], which with the sign takes 9 bits) with half its resolution, so it fits."""
    codes = torch.round(LOG_STEPS * torch.log(projected.abs())).clamp(-LARGEST_CODE, LARGEST_CODE)
    return torch.sign(projected) * torch.exp(codes / LOG_STEPS)


@dataclass(frozen=True)
class SharedSeedPerturbation(ZerothOrderTransform):
    """Each local step s of node m is one SPSA sample at the round's start point theta:
    ``p = (L(theta + eps z) - L(theta - eps z)) / (2 eps)`` on the step's mini-batch, z from
    :func:`perturbations`; the step's gradient is ``p z / samples``, so ``samples`` SGD steps
    at rate lr leave ``theta - lr / samples * sum_s p_s z_s``."""

    epsilon: float
    samples: int
    seed: int
    quantize: bool = False

    def estimate(
        self,
        params: torch.Tensor,
        start: torch.Tensor,
        loss_at: LossAt,
        nodes: torch.Tensor,
        round_idx: int,
        step: int,
    ) -> torch.Tensor:
        z = perturbations(self.seed, round_idx, nodes, step, start.shape[1])
        projected = (loss_at(start + self.epsilon * z) - loss_at(start - self.epsilon * z)) / (
            2 * self.epsilon
        )
        if self.quantize:
            projected = one_byte(projected)
        return projected[:, None] * z / self.samples


class SharedSeedSPSA(Strategy):
    """Shared-seed SPSA (Zelikman, Huang, Liang, Haber and Goodman, "Just One Byte (per
    gradient): A Note on Low-Bandwidth Decentralized Language Model Finetuning Using Shared
    Randomness", arXiv 2306.10015).

    All machines hold the same theta.  Per round each machine m takes ``samples`` mini-batches
    s, draws z_{m,s} from (seed, round, m, s) and computes the projected gradient
    ``p_{m,s} = (L(theta + eps z) - L(theta - eps z)) / (2 eps)`` with two forward passes
    (:class:`SharedSeedPerturbation`); it sends only the scalars p_{m,s} to every other
    machine, and every machine applies ``theta <- theta - lr / N_tot sum_{m,s} p_{m,s} z_{m,s}``
    (N_tot = machines x samples), regenerating each z from its seed.

    Simulated as each machine's own share ``theta - lr / samples sum_s p_{m,s} z_{m,s}`` (its
    local SGD steps) followed by one all-to-all average written to every row: the same
    update, computed once and copied, so all replicas stay bitwise identical (what the
    paper's sorted-order replay and weight hash secure).  Traffic is counted as the protocol
    sends it: every machine sends its ``samples`` scalars (4 bytes, or 1 with ``quantize``:
    :func:`one_byte`) to each of the other N - 1, as control bytes of kind
    ``projected_gradients``; no model is sent.  The official app.py scales by
    lr / sqrt(N_tot) instead; here the rate is the optimizer's lr over N_tot as in the
    paper's update rule, so sqrt scaling is a choice of lr.  Plain SGD only (momentum 0, no
    weight decay): the steps must add the estimates unchanged.  Machines joining and leaving
    (the paper's timestamps) are not simulated.  Each evaluation records
    ``replicas_distinct``, the number of bitwise different replicas by their hashes (1: all
    identical, as the paper's weight hash checks).
    """

    replicated = True  # checked at each evaluation: replicas_distinct, by the models' hashes

    def __init__(self, epsilon: float = 1e-3, samples: int = 1, quantize: bool = False) -> None:
        check(epsilon > 0, f"strategy.epsilon={epsilon} must be > 0")
        check(samples >= 1, f"strategy.samples={samples} must be an integer >= 1")
        self.epsilon, self.samples, self.quantize = epsilon, samples, quantize

    def validate(self, federation: Federation) -> None:
        check(
            federation.momentum == 0,
            f"optimizer.momentum={federation.momentum}: strategy=shared_seed_spsa applies "
            "the estimates by plain SGD; set optimizer.momentum=0",
        )

    def scalar_bytes(self) -> int:
        """The size of one projected gradient on the wire."""
        return BYTE if self.quantize else FLOAT_BYTES

    def plan(self, round_idx: int, federation: Federation) -> RoundPlan:
        check(  # the sizes of compressed links are known from the first plan on (at build)
            not federation.link_bytes,
            "strategy=shared_seed_spsa sends projected gradients, not models, which no "
            "compressor encodes (strategy.quantize=true sends them as one byte); use "
            "compression=none",
        )
        num_nodes = federation.num_nodes
        everyone = np.arange(num_nodes)
        perturbation = SharedSeedPerturbation(
            self.epsilon, self.samples, federation.seed, self.quantize
        )
        train = Train(everyone, steps=self.samples, transforms=(perturbation,))
        apply = Average(everyone, everyone, np.full(num_nodes, 1.0 / num_nodes))
        sent = self.samples * (num_nodes - 1) * self.scalar_bytes()
        traffic = Traffic(
            model_messages=np.zeros(num_nodes, np.int64),
            control_bytes={"projected_gradients": np.full(num_nodes, float(sent))},
            aggregations=np.ones(num_nodes, np.int64),
        )
        return RoundPlan(steps=(train, apply), traffic=traffic)
