"""Privacy accounting of noisy decentralized SGD: the per-node bound b and the epsilon spent.

DECOR's accountant (Allouah et al., ICML 2024, ``utils/dp_account.py``), used by CorN-DSGD
(Rodio et al. 2025): replacing one example of a node moves its sum of per-example gradients
clipped to C by at most 2C per step, so with noise covariance R across nodes each step is a
Gaussian mechanism of Renyi divergence ``alpha * 2 C^2 (R^-1)_ii``; T steps compose to
``alpha T rho`` with ``rho = 2 C^2 max_i (R^-1)_ii``, and the classic conversion
``eps = T rho + 2 sqrt(T rho log(1/delta))`` (the best order alpha) gives (eps, delta)-DP.
Solving for rho gives the bound ``(R^-1)_ii <= b``.  This is example-level DP, with no
subsampling amplification.  For user-level DP (a node's whole data set replaced), a node's
batch of B clipped gradients moves its sum by up to 2BC: the same formulas with ``C`` the
bound B C on a node's whole contribution to one step (``privacy.unit=user``).

The same guarantee is also computed with Google's ``dp-accounting`` library (its RDP
accountant, with its tighter RDP-to-DP conversion), which cross-checks the closed form.
"""

from __future__ import annotations

import math

from fedsim.errors import check

BOUND_FORMULA = "(sqrt(log(1/delta) + eps) - sqrt(log(1/delta)))^2 / (2 T C^2)  [DECOR RDP]"


def check_privacy_settings(epsilon: float, delta: float, clip: float) -> None:
    """One clear line for each illegal privacy setting."""
    check(epsilon > 0, f"privacy.epsilon={epsilon} must be > 0")
    check(0 < delta < 1, f"privacy.delta={delta} must lie in (0, 1)")
    check(clip > 0, f"privacy.clip={clip} must be > 0")


def privacy_bound(epsilon: float, delta: float, steps: int, clip: float) -> float:
    """b: the largest ``(R^-1)_ii`` that keeps ``steps`` noisy steps (eps, delta)-DP."""
    check_privacy_settings(epsilon, delta, clip)
    check(steps >= 1, f"a private run needs at least one noisy step, got {steps}")
    log_inverse_delta = math.log(1 / delta)
    root = math.sqrt(log_inverse_delta + epsilon) - math.sqrt(log_inverse_delta)
    return root**2 / (2 * steps * clip**2)


def epsilon_spent(max_inverse_diagonal: float, steps: int, clip: float, delta: float) -> float:
    """The epsilon of ``steps`` steps whose noise has ``max_i (R^-1)_ii`` as given."""
    if steps == 0:
        return 0.0
    if not math.isfinite(max_inverse_diagonal):
        return math.inf
    total = steps * 2 * clip**2 * max_inverse_diagonal  # T rho
    return total + 2 * math.sqrt(total * math.log(1 / delta))


def library_epsilon(max_inverse_diagonal: float, steps: int, clip: float, delta: float) -> float:
    """The same mechanism through dp-accounting's RDP accountant: a Gaussian of noise
    multiplier ``sigma / (2 C)`` with ``sigma^2 = 1 / max_i (R^-1)_ii``, composed ``steps``
    times."""
    if steps == 0:
        return 0.0
    if not math.isfinite(max_inverse_diagonal):
        return math.inf
    import dp_accounting  # noqa: PLC0415 - a second to import; only private runs need it

    accountant = dp_accounting.rdp.RdpAccountant()
    multiplier = 1 / (math.sqrt(max_inverse_diagonal) * 2 * clip)
    accountant.compose(dp_accounting.GaussianDpEvent(multiplier), steps)
    return float(accountant.get_epsilon(delta))
