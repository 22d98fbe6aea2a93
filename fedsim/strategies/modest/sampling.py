"""MoDeST's decentralized sampling: a per-round hash ranking filtered by pings.

Every node ranks the nodes it believes alive by a stable hash of (node id, round) and pings
down that ranking until enough of them answer (de Vos et al., 2023, v1; official code,
``sample_manager.py`` and ``caches.py``).  Two nodes with different views can rank
differently; the protocol never needs them to agree.
"""

from __future__ import annotations

import hashlib
import heapq
import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np


@lru_cache(maxsize=4)
def _hash_keys(round_idx: int, num_nodes: int, seed: int) -> np.ndarray:
    """Every node's rank key in ``round_idx``: the MD5 digest of ``"<key>-<round>"``, where a
    node's key ``"<seed>:<node>"`` stands for its public key (a new deployment per seed)."""
    digests = [
        hashlib.md5(f"{seed}:{node}-{round_idx}".encode()).digest() for node in range(num_nodes)
    ]
    return np.array([int.from_bytes(digest[:8], "big") for digest in digests], dtype=np.uint64)


def ranking(round_idx: int, candidates: np.ndarray, num_nodes: int, seed: int) -> np.ndarray:
    """``candidates`` sorted by their hash for ``round_idx`` (ties by node id), fresh each round."""
    keys = _hash_keys(round_idx, num_nodes, seed)[candidates]
    return candidates[np.lexsort((candidates, keys))]


@dataclass(frozen=True)
class Selection:
    """The outcome of pinging down a ranking: who answered, when the pinger knew enough,
    how many pings each target got and who answered at all (also after ``finished_at``)."""

    chosen: list[int]
    finished_at: float
    pings: dict[int, int]
    answered: list[int]


def select(
    pinger: int,
    ranked: np.ndarray,
    count: int,
    start: float,
    answers: Callable[[int, float], float | None],
    timeout_s: float,
    resend_s: float,
) -> Selection:
    """The first ``count`` responsive nodes of ``ranked``, found as MoDeST's pinger finds them.

    The first ``count`` candidates are pinged at ``start``; the pinger itself counts as
    answering at once.  ``answers(node, time)`` gives when a ping sent at ``time`` is
    answered (None if the node is down).  A ping unanswered after ``timeout_s`` makes the
    pinger ping the next candidate; pings are resent every ``resend_s`` until answered or
    timed out.  Selection ends once ``count`` answered or the ranking ran out.
    """
    events: list[tuple[float, int, int]] = []  # (time, order, node); node < 0: a timeout
    pings: dict[int, int] = {}
    chosen: list[int] = []
    answered: list[int] = []
    position = 0

    def ping(at: float) -> None:
        nonlocal position
        node = int(ranked[position])
        position += 1
        if node == pinger:
            heapq.heappush(events, (at, position, node))
            return
        answer = answers(node, at)
        if answer is None:
            pings[node] = math.ceil(timeout_s / resend_s)
            heapq.heappush(events, (at + timeout_s, position, -1))
        else:
            pings[node] = 1 + int((answer - at) // resend_s)
            heapq.heappush(events, (answer, position, node))

    for _ in range(min(count, len(ranked))):
        ping(start)
    finished_at = start
    while events and len(chosen) < count:
        finished_at, _, node = heapq.heappop(events)
        if node < 0:
            if position < len(ranked):
                ping(finished_at)
            continue
        chosen.append(node)
        answered.append(node)
    answered.extend(node for _, _, node in events if node >= 0)
    return Selection(chosen, finished_at, pings, answered)
