"""The per-node bound b of DECOR's accountant, and the dp-accounting library's cross-check."""

import math

import dp_accounting
import pytest
from dp_accounting import rdp

from fedsim.errors import ConfigError
from fedsim.privacy.accounting import epsilon_spent, library_epsilon, privacy_bound

EPSILONS = (3, 5, 7, 10, 15, 20, 30, 40)
# sigma_LDP = 1 / sqrt(b) at delta = 1e-5, C = 0.1 (the spec's calibration table)
CALIBRATION = {
    1000: (10.74, 6.67, 4.92, 3.59, 2.55, 2.01, 1.47, 1.18),
    5000: (24.01, 14.91, 10.99, 8.03, 5.70, 4.50, 3.28, 2.64),
}


@pytest.mark.parametrize("steps", CALIBRATION)
def test_the_bound_matches_the_calibration_table(steps):
    sigmas = [1 / math.sqrt(privacy_bound(eps, 1e-5, steps, 0.1)) for eps in EPSILONS]
    # to two decimals (the table prints 5.70 for 5.6948 at eps 15, T 5000: within 0.01)
    assert sigmas == pytest.approx(CALIBRATION[steps], abs=0.006)


@pytest.mark.parametrize("epsilon", EPSILONS)
def test_noise_at_the_bound_spends_exactly_epsilon(epsilon):
    bound = privacy_bound(epsilon, 1e-5, 1000, 0.1)
    assert epsilon_spent(bound, 1000, 0.1, 1e-5) == pytest.approx(epsilon)
    assert epsilon_spent(bound, 500, 0.1, 1e-5) < epsilon  # a run stopped half-way spent less


@pytest.mark.parametrize("epsilon", (3, 10, 40))
def test_dp_accounting_agrees_with_the_closed_form(epsilon):
    steps, clip, delta = 1000, 0.1, 1e-5
    bound = privacy_bound(epsilon, delta, steps, clip)
    multiplier = 1 / (math.sqrt(bound) * 2 * clip)  # sigma / sensitivity, sensitivity 2C
    accountant = rdp.RdpAccountant()
    accountant.compose(dp_accounting.GaussianDpEvent(multiplier), steps)
    rho = 2 * clip**2 * bound
    # the library's Renyi curve is the closed form's alpha T rho at every order ...
    for order, value in zip(accountant._orders, accountant._rdp, strict=True):
        assert value == pytest.approx(order * steps * rho, rel=1e-9)
    # ... the classic conversion over its orders is the closed form up to the order grid ...
    classic = min(
        value + math.log(1 / delta) / (order - 1)
        for order, value in zip(accountant._orders, accountant._rdp, strict=True)
        if order > 1
    )
    assert epsilon <= classic <= 1.02 * epsilon
    # ... and its own, tighter conversion certifies a little less than epsilon
    library = library_epsilon(bound, steps, clip, delta)
    assert library == accountant.get_epsilon(delta)
    assert 0.8 * epsilon < library < epsilon


@pytest.mark.parametrize(
    "settings, message",
    [
        ((0.0, 1e-5, 0.1), "privacy.epsilon=0.0 must be > 0"),
        ((1.0, 1.0, 0.1), r"privacy.delta=1.0 must lie in \(0, 1\)"),
        ((1.0, 1e-5, -1.0), "privacy.clip=-1.0 must be > 0"),
    ],
)
def test_bad_settings_fail_with_one_line(settings, message):
    epsilon, delta, clip = settings
    with pytest.raises(ConfigError, match=message):
        privacy_bound(epsilon, delta, 100, clip)
