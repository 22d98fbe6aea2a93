"""FedDisco: a server average weighted by how far each client's labels are from uniform.

Ye, Xu, Wang, Chen, Chen, "FedDisco: Federated Learning with Discrepancy-Aware
Collaboration", ICML 2023 (arXiv 2305.19229); the authors' code MediaBrain-SJTU/FedDisco,
``disco.py`` (``get_distribution_difference``, ``disco_weight_adjusting``).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import special

from fedsim.aggregators.mean import Mean
from fedsim.errors import check

MEASURES = ("kl", "l2", "l1", "cosine")
DISCREPANCY_BYTES = 4  # a client's d_k, one float32 sent beside its model


def discrepancies(histograms: np.ndarray, measure: str) -> np.ndarray:
    """Each client's discrepancy d_k between its label distribution and the uniform one.

    ``histograms`` (K, C) holds the label counts of the K clients of one average; D_k is
    row k over its total, T = 1/C.  ``kl``: KL(D_k || T) (scipy's ``kl_div`` summed over
    the classes, as the official code), divided by the sum over the K clients (all zero
    when that sum is 0), so d_k depends on who else is averaged; ``l2``, ``l1``:
    ||D_k - T||; ``cosine``: 1 - cos(D_k, T).  A client without examples has no label
    distribution: its d_k is 0 (the official code never has one).
    """
    counts = np.asarray(histograms, dtype=np.float64)
    totals = counts.sum(axis=1)
    held = totals > 0
    shares = counts[held] / totals[held, None]
    target = np.full(counts.shape[1], 1.0 / counts.shape[1])
    found = np.zeros(len(counts))
    if measure == "kl":
        found[held] = special.kl_div(shares, target).sum(axis=1)
        total = found.sum()
        return found / total if total != 0 else np.zeros(len(counts))
    if measure == "cosine":
        norms = np.linalg.norm(shares, axis=1) * np.linalg.norm(target)
        found[held] = 1.0 - shares @ target / norms
    else:
        found[held] = np.linalg.norm(shares - target, ord=1 if measure == "l1" else 2, axis=1)
    return found


def disco_weights(sizes: np.ndarray, discrepancy: np.ndarray, a: float, b: float) -> np.ndarray:
    """``w_k = max(p_k - a d_k + b, 0) / sum_j max(p_j - a d_j + b, 0)``, p_k = s_k / S.

    ``sizes`` s_k are the clients' unnormalised base weights (their example counts for
    FedAvg's weights), S their sum.  Where every ``p_k - a d_k + b <= 0`` (the official
    code then fails on an undefined name) the weights are FedAvg's, p_k.  Computed as
    ``max(s_k - S (a d_k - b), 0)`` normalised, the same weights scaled by S, so that
    a = b = 0 gives s_k / S, FedAvg's own expression, to the bit.
    """
    sizes = np.asarray(sizes, dtype=np.float64)
    total = sizes.sum()
    kept = np.maximum(sizes - total * (a * discrepancy - b), 0.0)
    if not (kept > 0).any():
        return sizes / total
    return kept / kept.sum()


class FedDisco(Mean):
    """Discrepancy-aware aggregation weights for a server's synchronous average (FedDisco,
    Ye et al., ICML 2023): client k of the round's K weighs

    ``w_k ∝ max(p_k - a d_k + b, 0)``  (:func:`disco_weights`),

    p_k the strategy's own weight (n_k / sum n with ``strategy.weighting=num_examples``, the
    official code's, which always weighs by examples; 1/K with ``uniform``) and d_k the
    ``measure`` of discrepancy between the client's label distribution and the uniform one
    (:func:`discrepancies`; the official default ``kl``, normalised over the round's
    clients).  With every ``p_k - a d_k + b <= 0`` the weights are p_k.  a = b = 0 is the
    strategy's average to the bit.

    It replaces the client weights of the FedAvg family (``fedavg``, ``fedprox``,
    ``fednova`` inside its normalisation, ``scaffold``'s model average but not its control
    variates, ``fedavgm``, ``fedadam``, ...), as the official code does for each; what the
    server then does with the average (a server optimizer) is unchanged, and the models are
    combined as by :class:`~fedsim.aggregators.mean.Mean`.

    Bytes: the target is public, so each client computes its own raw d_k and sends it with
    every upload, one float32 (``DISCREPANCY_BYTES``, control traffic of kind ``side``); the
    server normalises the KL over the round.  (The official code reads the clients' label
    counts on the server, for free.)  Privacy: d_k, like the label histogram it is computed
    from, is privacy-sensitive (it tells how skewed a client's labels are; with few
    classes it pins down much of the histogram) and travels in the clear, outside any
    ``privacy=...`` accounting, which covers the shared models only.
    """

    weighs_clients = True
    side_bytes = DISCREPANCY_BYTES

    def __init__(self, a: float = 0.5, b: float = 0.1, measure: str = "kl"):
        check(0 <= a < math.inf, f"aggregator.a={a} must be a finite number >= 0")
        check(math.isfinite(b), f"aggregator.b={b} must be a finite number")
        check(
            measure in MEASURES,
            f"aggregator.measure={measure} is not one of: {', '.join(MEASURES)}",
        )
        self.a, self.b, self.measure = a, b, measure

    def client_weights(self, sizes: np.ndarray, histograms: np.ndarray) -> np.ndarray:
        """The weights (summing to one) of clients with base weights ``sizes`` (K,) and
        label counts ``histograms`` (K, C)."""
        return disco_weights(sizes, discrepancies(histograms, self.measure), self.a, self.b)
