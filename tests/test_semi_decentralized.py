"""S2S and S2A against the spec's one-step identities and limit cases."""

import numpy as np
import pytest
import torch
from conftest import compose_config

from fedsim.build import build_simulation
from fedsim.plans import Average, Gossip, RoundPlan, Train

COMPONENTS = ("topology=components", "topology.kind=complete", "partition=by_component")


def simulation(strategy, *overrides):
    config = compose_config(f"strategy={strategy}", "num_nodes=10", *COMPONENTS, *overrides)
    built = build_simulation(config)
    built.backend.start(built.task, built.num_rows)
    return built


def run_rounds(built, rounds):
    for round_idx in range(rounds):
        built.backend.execute(built.strategy.plan(round_idx, built.federation), round_idx)
    return built.backend.params[: built.federation.num_nodes].clone()


def server_step(built, round_idx, params):
    """Only the D2S part of round ``round_idx`` (the two averages), applied to ``params``."""
    plan = built.strategy.plan(round_idx, built.federation)
    built.backend.params[: len(params)] = params
    built.backend.execute(RoundPlan(plan.steps[2:]), round_idx)
    return built.backend.params[: len(params)].clone()


def disagreement(params):
    return float((params - params.mean(dim=0)).pow(2).sum())


def test_round_order_is_train_gossip_then_server_every_h_rounds():
    built = simulation("s2s", "strategy.server_period=3", "strategy.num_sampled=4")
    kinds = [
        [type(step) for step in built.strategy.plan(r, built.federation).steps] for r in range(6)
    ]
    assert kinds[0] == kinds[1] == [Train, Gossip]
    assert kinds[2] == [Train, Gossip, Average, Average]
    assert kinds[5] == kinds[2]


def test_sampling_is_uniform_over_all_devices_ignoring_components():
    built = simulation("s2s", "strategy.server_period=1", "strategy.num_sampled=3")
    counts = np.zeros(10)
    for round_idx in range(2000):
        counts[built.strategy.plan(round_idx, built.federation).steps[2].sources] += 1
    np.testing.assert_allclose(counts / 2000, 0.3, atol=0.04)


@pytest.mark.parametrize("k", [2, 5, 8])
def test_one_step_identities_over_many_draws(k):
    s2s = simulation("s2s", "strategy.server_period=1", f"strategy.num_sampled={k}")
    s2a = simulation("s2a", "strategy.server_period=1", f"strategy.num_sampled={k}")
    params = torch.randn(10, s2s.task.layout.size, generator=torch.Generator().manual_seed(0))
    n, xi, mean = 10, disagreement(params), params.mean(dim=0)
    after_s2s, shift_s2a = [], []
    for round_idx in range(1500):
        stepped = server_step(s2s, round_idx, params)
        torch.testing.assert_close(
            stepped.mean(dim=0), mean, atol=1e-5, rtol=0
        )  # S2S keeps the mean
        after_s2s.append(disagreement(stepped))
        broadcast = server_step(s2a, round_idx, params)
        assert disagreement(broadcast) == pytest.approx(0.0, abs=1e-6)  # S2A removes disagreement
        shift_s2a.append(float((broadcast.mean(dim=0) - mean).pow(2).sum()))
    assert np.mean(after_s2s) == pytest.approx((n - k) / (n - 1) * xi, rel=0.05)
    assert np.mean(shift_s2a) == pytest.approx((n - k) / (k * (n - 1)) * xi / n, rel=0.1)


def test_s2s_leaves_unsampled_devices_and_their_optimizer_state_untouched():
    built = simulation(
        "s2s", "strategy.server_period=1", "strategy.num_sampled=4", "optimizer.momentum=0.9"
    )
    run_rounds(built, 2)
    params, momentum = built.backend.params.clone(), built.backend.momentum.clone()
    plan = built.strategy.plan(2, built.federation)
    sampled = plan.steps[2].sources
    built.backend.execute(RoundPlan(plan.steps[2:]), 2)
    others = np.setdiff1d(np.arange(10), sampled)
    assert torch.equal(built.backend.params[others], params[others])
    assert torch.equal(built.backend.momentum, momentum)
    expected = params[sampled].mean(dim=0)
    torch.testing.assert_close(built.backend.params[sampled], expected.expand(4, -1))


def test_k_equal_n_makes_s2s_equal_s2a():
    s2s = run_rounds(simulation("s2s", "strategy.server_period=2", "strategy.num_sampled=10"), 6)
    s2a = run_rounds(simulation("s2a", "strategy.server_period=2", "strategy.num_sampled=10"), 6)
    torch.testing.assert_close(s2s, s2a, rtol=0, atol=1e-6)
    assert disagreement(s2a) == pytest.approx(0.0, abs=1e-6)


def test_k_one_makes_the_s2s_server_step_a_no_op():
    built = simulation("s2s", "strategy.server_period=1", "strategy.num_sampled=1")
    params = torch.randn(10, built.task.layout.size)
    for round_idx in range(5):
        torch.testing.assert_close(server_step(built, round_idx, params), params, rtol=0, atol=0)


def test_without_the_server_components_never_agree():
    built = simulation(
        "s2s", "strategy.server_period=1000", "strategy.num_sampled=2", "init=independent"
    )
    params = run_rounds(built, 30)
    first, second = params[:5].mean(dim=0), params[5:].mean(dim=0)
    assert disagreement(params[:5]) < 1e-6 and disagreement(params[5:]) < 1e-6  # complete blocks
    assert float((first - second).pow(2).sum()) > 1e-3


def test_s2a_sends_n_minus_k_more_downlink_messages():
    for strategy, downlink in (("s2s", 3), ("s2a", 10)):
        built = simulation(strategy, "strategy.server_period=1", "strategy.num_sampled=3")
        upload, download = built.strategy.plan(0, built.federation).steps[2:]
        assert upload.messages(10).sent(11).sum() == 3 and upload.messages(10).link == "uplink"
        assert download.messages(10).sent(11).sum() == downlink
        assert download.messages(10).link == "downlink"
    gossip = built.strategy.plan(0, built.federation).steps[1]
    assert gossip.messages(10).sent(11).tolist() == [4] * 10 + [0]  # complete blocks of 5


def test_settings_are_checked():
    with pytest.raises(Exception, match="strategy.num_sampled=11 must be <= num_nodes=10"):
        simulation("s2a", "strategy.num_sampled=11")
    with pytest.raises(Exception, match="strategy.server_period=0 must be >= 1"):
        simulation("s2a", "strategy.server_period=0")
