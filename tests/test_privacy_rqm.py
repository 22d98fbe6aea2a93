"""privacy=rqm: RQM's output pmf against a brute-force enumeration and against Cai et al.'s
baseline code, the sampler unbiased and distributed as the pmf, the exact RDP accountant
(hand-computed cases, q = 1 no privacy, m = 2 the sign quantiser), wire sizes, bad settings
refused in one line, and a FedAvg run that records its epsilon, counts its bytes and resumes."""

import itertools
import math

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import compose_config
from helpers import whole_and_resumed

from fedsim.build import build_simulation
from fedsim.errors import ConfigError
from fedsim.messages import Outgoing
from fedsim.metrics.recorder import Recorder
from fedsim.privacy.rqm import (
    ORDERS,
    RandomizedQuantization,
    RandomizedQuantizer,
    coordinate_privacy,
    epsilon_of,
    level_grid,
    log_output_pmf,
    renyi_divergence,
)

BASE = ["num_nodes=12", "rounds=2", "model=logreg", "privacy=rqm"]
RUN = [*BASE, "strategy.sample_size=4"]


def brute_force_pmf(value: float, grid: np.ndarray, keep: float) -> np.ndarray:
    """Every keep pattern of the interior levels, weighted by its probability, then the
    rounding between the nearest kept levels below and above."""
    pmf = np.zeros(len(grid))
    for pattern in itertools.product((False, True), repeat=len(grid) - 2):
        kept = np.array([True, *pattern, True])
        weight = math.prod(keep if bit else 1 - keep for bit in pattern)
        low = max(i for i in np.flatnonzero(kept) if grid[i] <= value)
        high = min(i for i in np.flatnonzero(kept) if grid[i] > value or i == len(grid) - 1)
        up = (value - grid[low]) / (grid[high] - grid[low])
        pmf[high] += weight * up
        pmf[low] += weight * (1 - up)
    return pmf


@pytest.mark.parametrize("keep", [0.3, 0.5, 1.0])
def test_the_pmf_sums_to_one_is_unbiased_and_equals_the_enumeration(keep):
    grid = level_grid(5, clip=1.0, margin=0.8)  # -1.8, -0.9, 0, 0.9, 1.8
    for value in [-1.0, -0.9, -0.3, 0.0, 0.45, 0.9, 1.0]:
        pmf = np.exp(log_output_pmf(value, grid, keep))
        assert pmf.sum() == pytest.approx(1, abs=1e-14)
        assert pmf @ grid == pytest.approx(value, abs=1e-14)
        np.testing.assert_allclose(pmf, brute_force_pmf(value, grid, keep), atol=1e-15)


def test_pure_epsilon_equals_the_baseline_code_of_cai_et_al():
    """log of ``pri_loss(np.linspace(-c-delta, c+delta, m), c, q)`` of osu-srml/DP_Linprog's
    rqm.py, run on these settings: (m, q, c, margin) -> epsilon."""
    measured = {
        (4, 0.5, 1.0, 1.0): 2.0149030205422647,
        (4, 0.3, 1.0, 1.5): 1.2009068847041011,
        (5, 0.4, 1.0, 0.8): 2.238046571856475,
        (6, 0.7, 0.5, 0.3): 5.06275129523527,
        (8, 0.2, 1.0, 2.0): 1.2744135582414489,
    }
    for (levels, keep, clip, margin), epsilon in measured.items():
        assert coordinate_privacy(levels, keep, clip, margin)[1] == pytest.approx(epsilon)


def test_two_levels_are_the_sign_quantiser_whatever_q():
    """Levels +-2 (c = margin = 1): x = 1 goes up w.p. 3/4, x = -1 w.p. 1/4, so the pure
    epsilon is log 3 and D_2 = log((3/4)^2 / (1/4) + (1/4)^2 / (3/4)) = log(7/3)."""
    grid = level_grid(2, clip=1.0, margin=1.0)
    assert grid.tolist() == [-2.0, 2.0]
    for keep in (0.1, 1.0):
        assert np.exp(log_output_pmf(1.0, grid, keep)) == pytest.approx([0.25, 0.75])
        rdp, pure = coordinate_privacy(2, keep, 1.0, 1.0, orders=(2,))
        assert pure == pytest.approx(math.log(3))
        assert rdp[0] == pytest.approx(math.log(7 / 3))
    quantiser = RandomizedQuantizer(2, 0.5, 1.0, 1.0)
    values = torch.full((1, 1000), 0.5, dtype=torch.float64)
    sent = quantiser(values, Outgoing(np.array([3]), "uplink", 0, 0, 12))
    assert set(sent.unique().tolist()) == {-2.0, 2.0}


def test_the_renyi_divergence_of_a_hand_computed_pair():
    """P = (1/2, 1/2), Q = (1/4, 3/4): D_2 = log(1/4 / (1/4) + 1/4 / (3/4)) = log(4/3)."""
    log_p, log_q = np.log([0.5, 0.5]), np.log([0.25, 0.75])
    assert renyi_divergence(log_p, log_q, 2) == pytest.approx(math.log(4 / 3))
    assert renyi_divergence(log_p, np.array([0.0, -np.inf]), 2) == math.inf


def test_the_breakpoints_give_the_largest_divergence_of_a_dense_grid():
    grid = level_grid(5, clip=1.0, margin=0.8)
    pmfs = [log_output_pmf(value, grid, 0.4) for value in np.linspace(-1, 1, 41)]
    dense = np.max([renyi_divergence(p, q, (2, 8)) for p in pmfs for q in pmfs], axis=0)
    exact = coordinate_privacy(5, 0.4, 1.0, 0.8, orders=(2, 8))[0]
    np.testing.assert_allclose(dense, exact, rtol=1e-12)


def test_keeping_every_level_is_plain_stochastic_rounding_with_no_privacy():
    """q = 1: a value on a level is sent as that level, so epsilon is infinite."""
    rdp, pure = coordinate_privacy(4, 1.0, 1.0, 1.0)
    assert pure == math.inf and np.isinf(rdp).all()
    quantiser = RandomizedQuantizer(4, 1.0, 1.0, 1.0)  # levels -2, -2/3, 2/3, 2
    values = torch.full((2, 500), 2 / 3, dtype=torch.float64)
    sent = quantiser(values, Outgoing(np.array([0, 1]), "uplink", 0, 0, 12))
    torch.testing.assert_close(sent, values)
    assert coordinate_privacy(4, 0.5, 1.0, 0.0)[1] == math.inf  # margin 0: x = c is a level


def test_the_sampler_is_unbiased_and_draws_the_pmf():
    quantiser = RandomizedQuantizer(5, 0.4, 1.0, 0.8)
    grid = level_grid(5, 1.0, 0.8)
    for value in (-1.0, -0.37, 0.0, 0.9, 1.0):
        values = torch.full((1, 10_000), value, dtype=torch.float64)
        sent = quantiser(values, Outgoing(np.array([7]), "uplink", 3, 0, 12))[0].numpy()
        spread = np.sqrt(np.exp(log_output_pmf(value, grid, 0.4)) @ (grid - value) ** 2)
        assert abs(sent.mean() - value) < 4 * spread / 100  # 4 standard errors
        counts = np.array([(np.isclose(sent, level)).sum() for level in grid]) / 10_000
        pmf = np.exp(log_output_pmf(value, grid, 0.4))
        assert np.all(np.abs(counts - pmf) < 4 * np.sqrt(pmf * (1 - pmf) / 10_000) + 1e-12)


def test_values_beyond_the_clip_are_clipped_and_each_client_draws_its_own_coins():
    quantiser = RandomizedQuantizer(4, 0.5, 1.0, 1.0)
    values = torch.full((2, 2000), 5.0, dtype=torch.float64)
    sent = quantiser(values, Outgoing(np.array([0, 1]), "uplink", 0, 0, 12))
    assert sent.mean().item() == pytest.approx(1.0, abs=0.05)
    assert not torch.equal(sent[0], sent[1])


def test_wire_size_is_ceil_log2_m_bits_a_coordinate():
    assert RandomizedQuantizer(2, 0.5, 1, 1).wire_bytes(10**6) * 8 == 10**6
    assert RandomizedQuantizer(4, 0.5, 1, 1).wire_bytes(10**6) * 8 == 2 * 10**6
    assert RandomizedQuantizer(5, 0.5, 1, 1).wire_bytes(10**6) * 8 == 3 * 10**6
    assert RandomizedQuantizer(5, 0.5, 1, 1).wire_bytes(10) == math.ceil(30 / 8)


def test_epsilon_composes_over_coordinates_and_uploads():
    privacy = RandomizedQuantization(levels=4, keep=0.5, clip=1.0, margin=1.0, delta=1e-5)
    privacy.num_parameters = 3
    privacy.rdp, privacy.pure = coordinate_privacy(4, 0.5, 1.0, 1.0)
    assert privacy.epsilon(0) == (0.0, 0.0)
    for uploads in (1, 2, 5):
        epsilon, pure = privacy.epsilon(uploads)
        assert pure == pytest.approx(uploads * 3 * 2.0149030205422647)
        rdp_epsilon = epsilon_of(uploads * 3 * privacy.rdp, ORDERS, 1e-5)
        assert epsilon == pytest.approx(min(rdp_epsilon, pure))
    assert privacy.epsilon(2)[1] == pytest.approx(2 * privacy.epsilon(1)[1])
    assert epsilon_of(np.array([0.5]), (2,), math.exp(-1)) == pytest.approx(1.5)


def test_a_fedavg_run_counts_quantised_uploads_and_records_the_worst_clients_epsilon(tmp_path):
    simulation = build_simulation(compose_config(*RUN, "privacy.levels=5"))
    d = simulation.task.layout.size
    assert simulation.federation.bytes_on("uplink") == math.ceil(3 * d / 8)
    simulation.run(Recorder(tmp_path / "metrics.parquet"), progress=False)
    rows = pd.read_parquet(tmp_path / "metrics.parquet")
    value = rows.query("round == 2").set_index("metric").value
    assert value["bytes_uplink_total"] == 2 * 4 * math.ceil(3 * d / 8)
    privacy = simulation.privacy
    most = int(privacy.uploads.max())
    assert privacy.uploads.sum() == 8 and most in (1, 2)
    assert value["privacy_epsilon_spent"] == pytest.approx(privacy.epsilon(most)[0])
    assert rows.query("round == 0 and metric == 'privacy_epsilon_spent'").value.item() == 0
    summary = privacy.summary(2)
    assert summary["pure_epsilon_spent"] == pytest.approx(most * d * privacy.pure)


def test_a_run_with_rqm_resumes_to_the_same_metrics(tmp_path):
    config = compose_config(*RUN, "eval_every=1", "checkpoint_every=1")
    whole, again = whole_and_resumed(config, tmp_path, killed_after=1)
    pd.testing.assert_frame_equal(whole, again)


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"keep": 0}, r"privacy.keep=0 must lie in \(0, 1\]"),
        ({"keep": 1.5}, r"privacy.keep=1.5 must lie in \(0, 1\]"),
        ({"levels": 1}, "privacy.levels=1 must be an integer >= 2"),
        ({"clip": 0}, "privacy.clip=0 must be > 0"),
        ({"margin": -1}, "privacy.margin=-1 must be >= 0"),
        ({"delta": 1}, r"privacy.delta=1 must lie in \(0, 1\)"),
    ],
)
def test_bad_settings_are_refused_in_one_line(settings, message):
    with pytest.raises(ConfigError, match=message):
        RandomizedQuantization(**settings)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["privacy.keep=0"], r"privacy.keep=0.0 must lie in \(0, 1\]"),
        (["strategy=dpsgd"], "privacy=rqm quantises what clients upload to a server"),
    ],
)
def test_a_composed_run_is_refused_before_any_work(overrides, message):
    with pytest.raises(ConfigError, match=message):
        build_simulation(compose_config(*BASE, *overrides))
