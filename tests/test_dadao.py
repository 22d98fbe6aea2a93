import networkx as nx
import numpy as np
import pandas as pd
import pytest
import torch
from conftest import compose_config
from helpers import path_federation, started_backend, whole_and_resumed, zero_logreg_task
from least_squares import gradients, local_loss

from fedsim.build import build_simulation
from fedsim.errors import ConfigError
from fedsim.plans import Train
from fedsim.strategies.base import Federation
from fedsim.strategies.dadao import (
    DADAO,
    VARIABLES,
    X_TILDE,
    Y_TILDE,
    Z_TILDE,
    Constants,
    GradientJump,
    Y,
    Z,
    catch_up,
    chi1,
    chi2,
    edge_exchange,
)
from fedsim.topology import Topology, metropolis_hastings

# mu = 0.5, L = 2: nu = 1/4, sqrt(nu / L) = sqrt(1/8); the path's chi1 = 2 (Laplacian / 2 edges:
# eigenvalues 0, 1/2, 3/2), lambda_mix = 4: chi1* = 1/2.
CONSTANTS = Constants(mu=0.5, L=2.0, chi1_star=0.5)
RATIO = np.sqrt(1 / 8)


def spec_matrix() -> torch.Tensor:
    """M of the spec's ODE for CONSTANTS, written out from its six equations."""
    eta = eta_tilde = alpha_tilde = RATIO / 8
    alpha, theta, nu = RATIO / 4, 1 / (2 * RATIO), 0.25
    m = torch.zeros(6, 6, dtype=torch.float64)
    m[0, 0], m[0, 1] = -eta, eta  # dX = eta (X~ - X)
    m[1, 0], m[1, 1] = eta_tilde, -eta_tilde  # dX~ = eta~ (X - X~)
    m[2, 2], m[2, 3] = -alpha, alpha  # dY = alpha (Y~ - Y)
    m[3, 1], m[3, 2], m[3, 4] = -theta * nu, -theta, -theta  # dY~ = -theta (nu X~ + Y + Z)
    m[4, 4], m[4, 5] = -alpha, alpha  # dZ = alpha (Z~ - Z)
    m[5, 4], m[5, 5] = alpha_tilde, -alpha_tilde  # dZ~ = alpha~ (Z - Z~)
    return m


def random_state(backend, seed: int = 0) -> dict[str, torch.Tensor]:
    """Every one of the six vectors of the 3 nodes set to random values (Z, Z~ summing to 0)."""
    generator = torch.Generator().manual_seed(seed)
    values = {}
    for name in VARIABLES:
        rows = torch.randn(3, backend.params.shape[1], generator=generator).to(backend.params)
        if name in (Z, Z_TILDE):
            rows -= rows.mean(dim=0)
        backend.slot(name)[:3] = rows
        values[name] = rows.double().clone()
    return values


def stacked(backend, node: int) -> torch.Tensor:
    return torch.stack([backend.slot(name)[node].double() for name in VARIABLES])


def test_the_constants_are_the_official_codes():
    assert CONSTANTS.nu == 0.25
    assert CONSTANTS.beta == 0.5
    assert CONSTANTS.beta_tilde == pytest.approx(2 * 0.5 * np.sqrt(8))
    assert CONSTANTS.gamma == 1 / 8
    assert CONSTANTS.gamma_tilde == pytest.approx(1 / (4 * np.sqrt(0.5)))
    assert CONSTANTS.delta_sum == pytest.approx(RATIO / 4 + 1)
    np.testing.assert_allclose(CONSTANTS.ode_matrix(), spec_matrix().numpy())
    assert chi1(nx.path_graph(3)) == pytest.approx(2.0)
    assert chi1(nx.complete_graph(4)) == pytest.approx(6 / 4)  # K4: lambda_2 = 4, 6 edges
    # Effective resistances of L / |E|: |E| times those of L, halved: path 2 * 1 / 2, K4
    # 6 * (2 / 4) / 2.
    assert chi2(nx.path_graph(3)) == pytest.approx(1.0)
    assert chi2(nx.complete_graph(4)) == pytest.approx(1.5)


def test_the_default_communication_rate_is_the_official_codes():
    federation = path_federation(zero_logreg_task())
    constants, rate = DADAO(strong_convexity=0.5, smoothness=2.0).constants(federation)
    assert rate == pytest.approx(np.sqrt(2 * 2.0 * 1.0))  # sqrt(2 chi1 chi2)
    assert constants.chi1_star == pytest.approx(2.0 / rate)


def test_the_catch_up_is_the_matrix_exponential():
    task = zero_logreg_task()
    backend = started_backend(task, num_rows=3)
    before = random_state(backend)
    elapsed = 1.7
    for step in catch_up(np.array([1]), np.array([elapsed]), CONSTANTS.ode_matrix()):
        backend._execute(step, 0)
    # X, X~: eta = eta~, so exp = (1/2) [[1 + e, 1 - e], [1 - e, 1 + e]], e = exp(-2 eta t).
    decay = np.exp(-2 * RATIO / 8 * elapsed)
    x, x_tilde = before["params"][1], before[X_TILDE][1]
    expected_x = ((1 + decay) * x + (1 - decay) * x_tilde) / 2
    expected_x_tilde = ((1 - decay) * x + (1 + decay) * x_tilde) / 2
    # Z, Z~: rates a = alpha, b = alpha~,
    # exp = [[b + a e, a - a e], [b - b e, a + b e]] / (a + b), e = exp(-(a + b) t).
    a, b = RATIO / 4, RATIO / 8
    e = np.exp(-(a + b) * elapsed)
    z, z_tilde = before[Z][1], before[Z_TILDE][1]
    expected_z = ((b + a * e) * z + (a - a * e) * z_tilde) / (a + b)
    expected_z_tilde = ((b - b * e) * z + (a + b * e) * z_tilde) / (a + b)
    after = stacked(backend, 1)
    for row, expected in zip(
        (0, 1, 4, 5), (expected_x, expected_x_tilde, expected_z, expected_z_tilde), strict=True
    ):
        torch.testing.assert_close(after[row], expected, atol=1e-5, rtol=1e-5)
    # Y, Y~ (driven by all six): against torch's matrix exponential of the spec's M.
    flow = torch.linalg.matrix_exp(spec_matrix() * elapsed)
    six = torch.stack([before[name][1] for name in VARIABLES])
    torch.testing.assert_close(after, flow @ six, atol=1e-5, rtol=1e-5)
    for name in VARIABLES:  # the other nodes do not move
        torch.testing.assert_close(backend.slot(name)[[0, 2]].double(), before[name][[0, 2]])


def test_catch_ups_compose_as_the_semigroup():
    task = zero_logreg_task()
    once, twice = started_backend(task, num_rows=3), started_backend(task, num_rows=3)
    random_state(once), random_state(twice)
    matrix = CONSTANTS.ode_matrix()
    for step in catch_up(np.arange(3), np.full(3, 2.0), matrix):
        once._execute(step, 0)
    for _ in range(2):
        for step in catch_up(np.arange(3), np.full(3, 1.0), matrix):
            twice._execute(step, 0)
    for name in VARIABLES:
        torch.testing.assert_close(once.slot(name), twice.slot(name), atol=1e-5, rtol=1e-5)


def test_a_gradient_event_jumps_by_hand():
    task = zero_logreg_task()
    backend = started_backend(task, num_rows=3)
    before = random_state(backend)
    l2 = 0.3
    backend._execute(Train(np.array([2]), steps=1, transforms=(GradientJump(CONSTANTS, l2),)), 0)
    x = before["params"]
    step = gradients(x)[2] + (l2 - CONSTANTS.nu) * x[2] - before[Y_TILDE][2]
    after = stacked(backend, 2)
    torch.testing.assert_close(after[0], x[2] - CONSTANTS.gamma * step, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(
        after[1], before[X_TILDE][2] - CONSTANTS.gamma_tilde * step, atol=1e-5, rtol=1e-5
    )
    torch.testing.assert_close(
        after[3], before[Y_TILDE][2] + CONSTANTS.delta_sum * step, atol=1e-5, rtol=1e-5
    )
    for row in (2, 4, 5):  # Y, Z, Z~ untouched
        torch.testing.assert_close(after[row], torch.stack([before[n][2] for n in VARIABLES])[row])


def test_an_edge_event_moves_z_by_hand():
    task = zero_logreg_task()
    backend = started_backend(task, num_rows=3)
    before = random_state(backend)
    for step in edge_exchange(0, 1, CONSTANTS):
        backend._execute(step, 0)
    m = before[Y][0] + before[Z][0] - before[Y][1] - before[Z][1]
    for node, sign in ((0, -1), (1, 1)):
        for name, rate in ((Z, CONSTANTS.beta), (Z_TILDE, CONSTANTS.beta_tilde)):
            expected = before[name][node] + sign * rate * m
            torch.testing.assert_close(
                backend.slot(name)[node].double(), expected, atol=1e-5, rtol=1e-5
            )
    for name in VARIABLES:
        torch.testing.assert_close(backend.slot(name)[2].double(), before[name][2])
    messages = [step.messages(3) for step in edge_exchange(0, 1, CONSTANTS)]
    sent = [
        (int(s), int(r))
        for part in messages
        for s, r in zip(part.senders, part.receivers, strict=True)
    ]
    assert sorted(sent) == [(0, 1), (1, 0)]  # Y + Z once each way: 2 d floats


def test_the_sums_of_z_and_z_tilde_stay_zero():
    """In float64, with every event's catch-up and exchange and X, Y, Y~ random (the gradient
    jumps, which do not touch Z or Z~, left out): zero up to the rounding of a few sums."""
    task = zero_logreg_task()
    federation = path_federation(task)
    backend = started_backend(task, num_rows=3)
    backend.params = backend.params.double()
    random_state(backend)
    for name in (Z, Z_TILDE):
        backend.slot(name).zero_()
    strategy = DADAO(strong_convexity=0.5, smoothness=2.0, communication_rate=4.0)
    for round_idx in range(4):
        for step in strategy.plan(round_idx, federation).steps:
            if not isinstance(step, Train):
                backend._execute(step, round_idx)
        for name in (Z, Z_TILDE):
            rows = backend.slot(name)[:3]
            assert rows.abs().max() > 0.1  # the exchanges moved them
            assert rows.sum(dim=0).abs().max() < 1e-12 * rows.abs().max()
    assert strategy.counts["communication_events"] >= 4


def test_event_counts_are_poisson():
    federation = Federation(5, 7, Topology(nx.cycle_graph(5), metropolis_hastings), np.ones(5))
    strategy = DADAO(gradient_rate=3.0, communication_rate=2.0, period=0.5)
    rounds, per_round, per_node, edges = 400, {True: [], False: []}, np.zeros(5), set()
    for round_idx in range(rounds):
        times, is_gradient, ends = strategy.events(round_idx, federation)
        assert ((round_idx * 0.5 <= times) & (times < (round_idx + 1) * 0.5)).all()
        assert (np.diff(times) >= 0).all()
        for kind in (True, False):
            per_round[kind].append(int((is_gradient == kind).sum()))
        per_node += np.bincount(ends[is_gradient, 0], minlength=5)
        edges |= {tuple(edge) for edge in ends[~is_gradient]}
    horizon = rounds * 0.5
    for kind, rate in ((True, 3.0), (False, 2.0)):
        counts = np.array(per_round[kind])
        expected = rate * horizon  # Poisson(rate T): within 4 standard deviations
        assert abs(counts.sum() - expected) < 4 * np.sqrt(expected)
        assert counts.var() / counts.mean() == pytest.approx(1.0, abs=0.25)  # dispersion 1
    expected = 3.0 * horizon / 5  # each node's count is Poisson(lambda_grad T / n)
    assert (np.abs(per_node - expected) < 4 * np.sqrt(expected)).all()
    assert edges == {(0, 1), (1, 2), (2, 3), (3, 4), (0, 4)}
    again = strategy.events(3, federation)
    assert all((a == b).all() for a, b in zip(again, strategy.events(3, federation), strict=True))


def test_a_round_without_edges_has_gradient_events_only():
    federation = Federation(3, 0, Topology(nx.empty_graph(3), metropolis_hastings), np.ones(3))
    strategy = DADAO(gradient_rate=3.0, communication_rate=3.0, period=2.0)
    times, is_gradient, ends = strategy.events(0, federation)
    assert len(times) > 0 and is_gradient.all() and (ends[:, 1] == -1).all()


def test_the_distance_to_the_optimum_decays_linearly():
    """Ridge-regularised logistic regression on the path's three nodes (l2 = 1): mu = 1 and
    L <= 1 + max_i lambda_max(mean of [x, 1][x, 1]^T) / 2 = 3.5 (node 1 holds x = (0, 2))."""
    l2 = 1.0
    task = zero_logreg_task()
    federation = path_federation(task)
    backend = started_backend(task, num_rows=3, zero=True)

    def objective(params):
        return (
            sum(local_loss(node, params) for node in range(3)) / 3 + l2 / 2 * params.square().sum()
        )

    optimum = torch.zeros(6, dtype=torch.float64)
    for _ in range(20):
        gradient = torch.autograd.functional.jacobian(objective, optimum)
        optimum = optimum - torch.linalg.solve(
            torch.autograd.functional.hessian(objective, optimum), gradient
        )
    strategy = DADAO(
        strong_convexity=1.0, smoothness=3.5, l2=l2, gradient_rate=3.0, communication_rate=2.0,
        period=3.0,
    )  # fmt: skip
    distances = [float(optimum.square().sum())]  # from zero
    for round_idx in range(5):
        backend.execute(strategy.plan(round_idx, federation), round_idx)
        distances.append(float((backend.params.double() - optimum).square().sum() / 3))
    logs, times = np.log(distances), np.arange(6)
    slope, intercept = np.polyfit(times, logs, 1)
    assert slope < -0.3  # at least e^-0.3 per 3 units of time
    assert (np.diff(logs) < -0.1).all(), distances  # every period shrinks it
    assert np.abs(logs - (slope * times + intercept)).max() < 0.5  # a straight line in log


def test_bytes_are_two_models_per_edge_event_and_a_resumed_run_matches(tmp_path):
    config = compose_config(
        "strategy=dadao", "num_nodes=3", "rounds=2", "eval_every=1", "checkpoint_every=1",
        "model=logreg", "optimizer.batch_size=512", "topology=ring", "strategy.l2=0.1",
        "strategy.strong_convexity=0.1", "strategy.smoothness=2.0",
        "strategy.communication_rate=2.0", "strategy.gradient_rate=2.0",
    )  # fmt: skip
    whole, again = whole_and_resumed(config, tmp_path, killed_after=1)
    pd.testing.assert_frame_equal(whole, again)
    totals = whole[whole.node.isna()].pivot_table(index="round", columns="metric", values="value")
    message = build_simulation(config).federation.message_bytes  # d floats
    assert totals.communication_events.iloc[-1] > 0
    pd.testing.assert_series_equal(
        totals.bytes_d2d_total, totals.communication_events * 2 * message, check_names=False
    )
    assert (totals.bytes_sent_total == totals.bytes_d2d_total).all()
    assert totals.sim_time_s.tolist() == [0.0, 1.0, 2.0]


@pytest.mark.parametrize(
    "settings, message",
    [
        (
            {"strong_convexity": 0.0},
            "strategy.strong_convexity=0.0 and strategy.smoothness=1.0 must",
        ),
        (
            {"strong_convexity": 2.0},
            "strategy.strong_convexity=2.0 and strategy.smoothness=1.0 must",
        ),
        ({"smoothness": float("inf")}, "0 < strong_convexity <= smoothness < inf"),
        ({"l2": -1.0}, r"strategy.l2=-1.0 must be a finite number >= 0"),
        ({"gradient_rate": 0.0}, r"strategy.gradient_rate=0.0 must be a finite number > 0"),
        ({"communication_rate": -2.0}, r"strategy.communication_rate=-2.0 must be a finite"),
        ({"period": float("inf")}, r"strategy.period=inf must be a finite number > 0"),
    ],
)
def test_bad_settings_are_named(settings, message):
    with pytest.raises(ConfigError, match=message):
        DADAO(**settings)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["optimizer.momentum=0.9"], "optimizer.momentum=0.9 must be 0"),
        (["compression=topk"], "use compression=none"),
        (["optimizer=adam"], "assumes local SGD"),
        (["num_nodes=1"], "needs num_nodes >= 2"),
    ],
)
def test_settings_it_cannot_run_with_are_refused_before_the_run(overrides, message):
    config = compose_config("strategy=dadao", "num_nodes=4", "model=logreg", *overrides)
    with pytest.raises(ConfigError, match=message):
        build_simulation(config)
