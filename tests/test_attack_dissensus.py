"""Dissensus: a Byzantine node sends its target x_i - epsilon (honest pull of i) / (the
target's weights on its attackers), so that with epsilon = 1 the target's gossip step leaves
it where it was (spec byzantine.md §1, "What fedsim must be able to show" 7)."""

import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from conftest import compose_config
from helpers import started_backend, zero_logreg_task

from fedsim import checkpoint
from fedsim.attacks.dissensus import Dissensus
from fedsim.build import build_simulation
from fedsim.errors import ConfigError
from fedsim.messages import MessageTransforms, Outgoing
from fedsim.plans import Gossip, RoundPlan

# Edges 0-1, 0-2, 1-2, 0-3, 1-3; node 3 attacks, weighing 1/4 at node 0 and 1/8 at node 1.
W = sp.csr_array(
    np.array(
        [
            [1 / 4, 1 / 4, 1 / 4, 1 / 4],
            [1 / 4, 3 / 8, 1 / 4, 1 / 8],
            [1 / 4, 1 / 4, 1 / 2, 0],
            [1 / 4, 1 / 8, 0, 5 / 8],
        ]
    )
)
MODELS = torch.tensor([[1.0, 0.0], [3.0, 2.0], [-1.0, 4.0], [100.0, 100.0]])
K4 = sp.csr_array(np.full((4, 4), 1 / 4))  # the complete graph: every weight ties


def dissenting(*nodes: int, epsilon: float = 1.0, num_nodes: int = 4) -> Dissensus:
    attack = Dissensus(epsilon=epsilon, nodes=list(nodes))
    attack.prepare(num_nodes=num_nodes, seed=0)
    return attack


def outgoing(*senders: int, mixing: sp.csr_array | None = W, seed: int = 0) -> Outgoing:
    return Outgoing(np.array(senders), "d2d", round_idx=0, seed=seed, num_nodes=4, mixing=mixing)


def seed_where_all_target(target: int, attack: Dissensus, mixing: sp.csr_array) -> int:
    """The first seed whose tie draws send every attacker of ``attack`` to ``target``."""
    attackers = attack.byzantine
    for seed in range(100):
        if (attack.targets(mixing, attackers, mixing.shape[0], seed) == target).all():
            return seed
    raise AssertionError("no seed of 100 sends every attacker to the target")


def test_equal_weights_spread_the_attackers_over_their_targets_by_the_seed():
    """On a 12-node ring every weight is 1/3: each attacker's target is one of its two
    neighbours, drawn per attacker from the seed, the same draw every step."""
    ring = sp.csr_array(
        (np.eye(12) + np.roll(np.eye(12), 1, axis=1) + np.roll(np.eye(12), -1, axis=1)) / 3
    )
    attack = dissenting(0, 4, 8, num_nodes=12)
    drawn = np.array([attack.targets(ring, attack.byzantine, 12, seed) for seed in range(20)])
    assert np.isin(drawn, [11, 1, 3, 5, 7, 9]).all()
    assert ((drawn - [0, 4, 8]) % 12 == 1).any() and ((drawn - [0, 4, 8]) % 12 == 11).any()
    assert drawn[3].tolist() == attack.targets(ring, attack.byzantine, 12, 3).tolist()


@pytest.mark.parametrize("epsilon", [1.0, 2.0])
def test_the_forged_message_is_the_targets_model_less_epsilon_times_its_honest_pull(epsilon):
    """Node 3 targets node 0 (1/4 > 1/8): pull 1/4 (2, 2) + 1/4 (-2, 4) = (0, 1.5), divided by
    w_03 = 1/4: (0, 6); the honest messages pass as they are."""
    received = dissenting(3, epsilon=epsilon)(MODELS, outgoing(0, 1, 2, 3))
    expected = MODELS.clone()
    expected[3] = torch.tensor([1.0, 0.0 - epsilon * 6.0])
    assert received.equal(expected)


def test_with_epsilon_one_the_targets_gossip_step_leaves_it_where_it_was():
    """The local backend's gossip step: node 0 keeps (1, 0); node 1, not targeted, still
    moves (its weight 1/8 on the forged (1, -6))."""
    task = zero_logreg_task()
    backend = started_backend(task, num_rows=4)
    backend.start(task, 4, messages=MessageTransforms.of([dissenting(3)]))
    backend.params.zero_()
    backend.params[:, :2] = MODELS
    backend.execute(RoundPlan((Gossip(W),)), round_idx=0)
    assert backend.params[0, :2].tolist() == [1.0, 0.0]
    assert backend.params[1, :2].tolist() == [1.25, 1.0]


def test_fedsim_run_under_dissensus_leaves_a_surrounded_target_where_its_training_took_it(
    tmp_path,
):
    """``fedsim run strategy=dpsgd attack=dissensus`` on a ring whose node 1 has only the
    attackers 0 and 2 as neighbours (both target it): after round 1 node 1 holds the model
    its own training made (the built run's Train step alone), to float32 rounding."""
    settings = [
        "num_nodes=12", "rounds=1", "eval_every=1", "checkpoint_every=1", "strategy=dpsgd",
        "topology=ring", "attack=dissensus", "attack.nodes=[0,2]",
    ]  # fmt: skip
    ring = build_simulation(compose_config(*settings)).federation.topology.mixing(0)
    seed = seed_where_all_target(1, dissenting(0, 2, num_nodes=12), ring)
    settings.append(f"seed={seed}")
    run = [sys.executable, "-m", "fedsim.cli", "run", *settings, f"hydra.run.dir={tmp_path}"]
    result = subprocess.run(run, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    after_round = checkpoint.load(tmp_path)["backend"]["params"]
    simulation = build_simulation(compose_config(*settings))
    backend, plan = simulation.backend, simulation.strategy.plan(0, simulation.federation)
    backend.start(simulation.task, simulation.num_rows, messages=simulation.messages)
    trains = tuple(step for step in plan.steps if not isinstance(step, Gossip))
    backend.execute(RoundPlan(trains), round_idx=0)
    trained = backend.params.cpu()
    torch.testing.assert_close(after_round[1], trained[1], rtol=0, atol=1e-7)  # float32 sums
    assert (after_round[3] - trained[3]).abs().max() > 1e-3  # node 3 is pulled by node 4


def test_two_attackers_of_one_target_share_the_cancellation():
    """Nodes 2 and 3 attack on K4; where the seed's tie draws send both to node 0, each sends
    x_0 - (1/4 (x_1 - x_0)) / (1/4 + 1/4); node 0's gossip step leaves it as it was."""
    seed = seed_where_all_target(0, dissenting(2, 3), K4)
    task = replace(zero_logreg_task(), seed=seed)
    backend = started_backend(task, num_rows=4)
    backend.start(task, 4, messages=MessageTransforms.of([dissenting(2, 3)]))
    backend.params.zero_()
    backend.params[:, :2] = MODELS
    backend.execute(RoundPlan((Gossip(K4),)), round_idx=0)
    assert backend.params[0, :2].tolist() == [1.0, 0.0]
    forged = dissenting(2, 3)(MODELS, outgoing(0, 1, 2, 3, mixing=K4, seed=seed))
    assert forged[2:].tolist() == [[0.0, -1.0], [0.0, -1.0]]


def test_an_attacker_without_an_honest_receiver_or_a_sending_target_sends_its_own_model():
    isolated = sp.csr_array(np.diag([1.0, 1.0, 1.0, 1.0]))
    assert dissenting(3)(MODELS, outgoing(0, 1, 2, 3, mixing=isolated)).equal(MODELS)
    assert dissenting(3)(MODELS[1:], outgoing(1, 2, 3)).equal(MODELS[1:])  # node 0 is silent


def test_a_step_without_mixing_weights_is_refused_naming_the_attack():
    with pytest.raises(ConfigError, match=r"attack=dissensus .* \(dpsgd, choco, s2s"):
        dissenting(3)(MODELS, outgoing(0, 1, 2, 3, mixing=None))


def test_a_strategy_without_gossip_is_refused_before_the_run():
    config = compose_config("num_nodes=12", "strategy=fedavg", "attack=dissensus")
    with pytest.raises(ConfigError, match="attack=dissensus forges gossip messages"):
        build_simulation(config)


def test_a_negative_epsilon_is_refused():
    with pytest.raises(ConfigError, match=r"attack.epsilon=-1.0 must be finite and >= 0"):
        Dissensus(epsilon=-1.0)
