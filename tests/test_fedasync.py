"""FedAsync: the server mixes each arriving model in with alpha times a staleness weight."""

import re

import numpy as np
import pytest
import torch
from conftest import compose_config

from fedsim.build import build_simulation
from fedsim.errors import ConfigError
from fedsim.plans import RoundPlan, Train
from fedsim.strategies.fedasync import FedAsync, Mixing


def test_the_staleness_functions_as_the_paper_defines_them():
    """async-fl.md, must-show 1."""
    assert FedAsync(alpha=1.0, staleness="constant").mixing_weight(7) == 1.0
    assert FedAsync(alpha=0.8, staleness_a=0.5).mixing_weight(3) == pytest.approx(0.4)
    hinge = FedAsync(alpha=1.0, staleness="hinge", staleness_a=10, staleness_b=4)
    assert [hinge.mixing_weight(s) for s in (0, 4)] == [1.0, 1.0]
    assert hinge.mixing_weight(5) == pytest.approx(1 / 11)


def test_alpha_is_computed_afresh_for_every_arrival():
    strategy = FedAsync(alpha=0.6)
    weights = [strategy.mixing_weight(s) for s in (3, 3, 0)]
    assert weights == [pytest.approx(0.3), pytest.approx(0.3), 0.6] and strategy.alpha == 0.6


def built(*settings):
    simulation = build_simulation(
        compose_config("num_nodes=6", "rounds=4", "strategy=fedasync", *settings)
    )
    simulation._start()
    return simulation


def test_with_alpha_one_and_one_client_at_a_time_it_is_sequential_sgd_over_clients():
    """Each client trains from the model the previous one left, and its model replaces the
    server's; the same clients trained one after another by hand end at the same model."""
    settings = ("strategy.alpha=1.0", "strategy.concurrency=1", "strategy.rho=0")
    simulation, by_hand = built(*settings), built(*settings)
    server = slice(6, 7)
    for round_idx in range(4):
        plan = simulation.strategy.plan(round_idx, simulation.federation)
        simulation.backend.execute(plan, round_idx)
        (client,) = plan.steps[1].nodes
        model = by_hand.backend.rows(server)
        by_hand.backend.params[client] = model[0]
        by_hand.backend.execute(RoundPlan((Train(np.array([client]), epochs=1),)), round_idx)
        by_hand.backend.params[6] = by_hand.backend.params[client]
        assert plan.steps[-1].sources.tolist() == [client]
    torch.testing.assert_close(simulation.backend.rows(server), by_hand.backend.rows(server))


def test_the_server_mixes_the_arriving_model_in():
    simulation = built(
        "strategy.alpha=0.5", "strategy.staleness=constant", "strategy.concurrency=2"
    )
    backend, server = simulation.backend, slice(6, 7)
    plan = simulation.strategy.plan(0, simulation.federation)
    update = plan.steps[-1]
    assert update.update == Mixing(0.5)
    backend.execute(RoundPlan(plan.steps[:-1]), 0)
    before, arriving = backend.rows(server), backend.rows(update.sources)
    backend.execute(RoundPlan((update,)), 0)
    torch.testing.assert_close(backend.rows(server), 0.5 * before + 0.5 * arriving)


def test_clients_train_on_the_proximal_objective():
    (transform,) = FedAsync(rho=0.01).local_training(np.array([0])).transforms
    assert transform.mu == 0.01
    assert FedAsync(rho=0).local_training(np.array([0])).transforms == ()


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("alpha=0", "strategy.alpha=0.0 must lie in (0, 1]"),
        ("staleness=linear", "strategy.staleness='linear' is not one of: constant, polynomial"),
        ("concurrency=0", "strategy.concurrency=0 must be >= 1"),
        ("concurrency=9", "strategy.concurrency=9 must be <= num_nodes=6"),
        ("rho=-1", "strategy.rho=-1.0 must be >= 0"),
    ],
)
def test_bad_settings_are_refused_with_the_setting_named(setting, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        build_simulation(compose_config("num_nodes=6", "strategy=fedasync", f"strategy.{setting}"))
