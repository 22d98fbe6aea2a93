"""Counter-based randomness: every random number is a pure function of its coordinates.

fedsim's invariant is that randomness derives from (seed, round, node), never from call
order, so that a run gives the same numbers whatever the chunking, the backend or the
number of workers.  Small per-round decisions (which nodes are sampled) use a NumPy
generator seeded by the coordinates; bulk per-node randomness (mini-batch shuffles of
thousands of nodes at once) uses :func:`uniform`, a vectorised SplitMix64 hash of the
coordinates that runs on any torch device.
"""

from __future__ import annotations

import numpy as np
import torch

# Streams keep independent uses of the same (seed, round) apart.
SAMPLING = 1
SHUFFLE = 2
INIT = 3
PARTITION = 4
EVALUATION = 5
TOPOLOGY = 6
NETWORK = 7
CHURN = 8
PROTOCOL = 9
PRIVACY = 10
ATTACK = 11
COMPRESSION = 12

_MASK_63 = (1 << 63) - 1


def generator(*coordinates: int) -> np.random.Generator:
    """A NumPy generator determined by ``coordinates`` alone (e.g. ``seed, stream, round``)."""
    return np.random.default_rng([int(c) for c in coordinates])


def _shift(x: torch.Tensor, bits: int) -> torch.Tensor:
    """``x >> bits`` treating int64 ``x`` as unsigned."""
    return (x >> bits) & ((1 << (64 - bits)) - 1)


def _mix(x: torch.Tensor) -> torch.Tensor:
    """SplitMix64's finaliser on int64 tensors (wrapping arithmetic, logical shifts)."""

    x = x + (-7046029254386353131)  # 0x9E3779B97F4A7C15 as a signed int64
    x = (x ^ _shift(x, 30)) * (-4658895280553007687)  # 0xBF58476D1CE4E5B9
    x = (x ^ _shift(x, 27)) * (-7723592293110705685)  # 0x94D049BB133111EB
    return x ^ _shift(x, 31)


def uniform(
    seed: int, stream: int, round_idx: int, nodes: torch.Tensor, counters: torch.Tensor
) -> torch.Tensor:
    """Uniform float32 values in [0, 1) of shape ``(len(nodes), *counters.shape)``.

    Entry ``[k, j...]`` depends only on ``(seed, stream, round_idx, nodes[k], counters[j...])``,
    so a node's numbers do not change with the other nodes it is computed with.
    """
    key = torch.tensor([int(seed) & _MASK_63, int(stream), int(round_idx)], dtype=torch.int64)
    base = _mix(_mix(_mix(key[0:1]) ^ key[1]) ^ key[2]).to(nodes.device)
    per_node = _mix(base ^ nodes.to(torch.int64)).view(-1, *([1] * counters.dim()))
    bits = _mix(per_node ^ _mix(counters.to(torch.int64))[None])
    # The top 24 bits give a float32 in [0, 1) that never rounds up to 1.
    return _shift(bits, 40).to(torch.float32) * (1.0 / (1 << 24))
