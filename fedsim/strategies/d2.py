"""D²: decentralized SGD that corrects for the variance between the nodes' data."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import eigsh

from fedsim.errors import check
from fedsim.strategies.base import Federation
from fedsim.strategies.exact_diffusion import ExactDiffusion

LOWEST_EIGENVALUE = -1 / 3  # D² needs lambda_min(W) above it
DENSE_LIMIT = 2000  # largest n whose spectrum is computed densely; above, ARPACK


def smallest_eigenvalue(weights: sp.csr_array) -> float:
    """lambda_min of a symmetric W."""
    if weights.shape[0] <= DENSE_LIMIT:
        return float(np.linalg.eigvalsh(weights.toarray()).min())
    return float(eigsh(weights.astype(np.float64), k=1, which="SA")[0][0])


class D2(ExactDiffusion):
    """D² (Tang, Lian, Yan, Zhang and Liu, "D²: Decentralized Training over Decentralized
    Data", ICML 2018), Algorithm 1 with one local plain-SGD step per round:

        x_1     = W (x_0 - lr G(x_0))
        x_{k+1} = W (2 x_k - x_{k-1} - lr G(x_k) + lr G(x_{k-1})),

    run as Exact Diffusion's adapt-correct-combine with W itself in place of (I + W) / 2
    (psi_k = x_{k-1} - lr G(x_{k-1}); the point gossiped is psi_{k+1} + x_k - psi_k, one
    message per edge).  W must be symmetric, doubly stochastic, with smallest eigenvalue
    above -1/3 (a ring with weights 1/3 sits exactly on the bound: use
    strategy=exact_diffusion or lazier weights).  The eigenvalue is checked on the first
    round's W.  The correction adds up whatever the mixing adds to the models' mean, so a
    W whose float32 weights do not sum to exactly 1 (1/3) makes the error creep up slowly
    after it reached its floor (measured in tests/test_d2.py); weights exact in float32
    (1/2, 1/4) do not.
    """

    name: ClassVar[str] = "d2"

    def validate(self, federation: Federation) -> None:
        super().validate(federation)
        lowest = smallest_eigenvalue(federation.topology.mixing(0))
        check(
            lowest > LOWEST_EIGENVALUE + 1e-9,
            f"strategy=d2 needs the mixing matrix's smallest eigenvalue > -1/3, got "
            f"{lowest:.6g} on {federation.topology.name}: use strategy=exact_diffusion "
            "(W_bar = (I + W) / 2) or a lazier mixing",
        )

    def mixing(self, round_idx: int, federation: Federation) -> sp.csr_array:
        """W itself."""
        return federation.topology.mixing(round_idx)
