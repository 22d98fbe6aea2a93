"""FedAMD: bullseyes and their mean, the miners' SARAH steps by hand, anchors leave x alone,
role draws, bytes per role, loop = vectorised, resume, bad settings."""

import math
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import compose_config
from helpers import (
    SHARDS,
    TRAIN_X,
    TRAIN_Y,
    path_federation,
    run_rounds,
    started_backend,
    whole_and_resumed,
)

from fedsim.build import build_simulation
from fedsim.data.datasets import Dataset
from fedsim.errors import ConfigError
from fedsim.models import logreg
from fedsim.strategies.fedamd import BULLSEYE, TARGET, FedAMD, anchor_probability
from fedsim.task import Task
from fedsim.training.schedule import NodeData, local_batches
from fedsim.training.sgd import SGD

LR = 0.5


def task(batch_size=4, weight_decay=0.0):
    """Logistic regression on the three nodes of helpers.py (batch 4: full-batch steps)."""
    model = logreg((2,), 2)
    data = Dataset("hand", TRAIN_X, TRAIN_Y, TRAIN_X, TRAIN_Y, num_classes=2)
    optimizer = SGD(lr=LR, batch_size=batch_size, weight_decay=weight_decay)
    return Task(model, data, NodeData.from_shards(SHARDS), optimizer, seed=0)


def loss_gradient(w, examples):
    """The gradient at the flat logreg parameters ``w`` of the mean loss on ``examples``."""
    w = w.detach().clone().requires_grad_()
    logits = TRAIN_X[examples] @ w[:4].view(2, 2).T + w[4:]
    torch.nn.functional.cross_entropy(logits, TRAIN_Y[examples]).backward()
    return w.grad


def full_gradient(w):
    """grad F(w), F = (1/3) sum of the nodes' mean losses (uniform over clients, as g)."""
    return sum(loss_gradient(w, shard) for shard in SHARDS) / 3


def run(strategy, rounds, the_task=None):
    return run_rounds(strategy, rounds, the_task or task(), zero=True)


def test_bullseyes_start_as_full_gradients_and_the_server_holds_their_mean():
    """Before round 0 every client stores its full-batch gradient at x_0 = 0 (node 2's over
    both its examples), and g = (1/3) sum b_m; anchors then leave the model alone."""
    backend = run(FedAMD(anchor_probability=1.0, sample_size=3), rounds=1)
    zero = torch.zeros(6)
    for node, shard in enumerate(SHARDS):
        torch.testing.assert_close(backend.slot(BULLSEYE)[node], loss_gradient(zero, shard))
    torch.testing.assert_close(backend.slot(TARGET)[3], full_gradient(zero))
    assert not backend.params.any()  # every sampled client an anchor: x stays x_0


def test_one_step_miners_without_anchors_step_along_the_first_target():
    """p = 0: the bullseyes are never refreshed, so g_t = g_0 every round, and with K = 1 a
    miner's step is y = x_t - lr g_0: three rounds move x by -3 lr grad F(x_0)."""
    strategy = FedAMD(anchor_probability=0.0, sample_size=2, local_steps=1)
    backend = run(strategy, rounds=3)
    torch.testing.assert_close(backend.params[3], -3 * LR * full_gradient(torch.zeros(6)))


def test_fresh_bullseyes_and_one_step_make_gradient_descent():
    """Every client sampled; periodic roles with period 2: in even rounds all are anchors at
    x_t (x stays), in odd ones all are miners with g = grad F(x_t): one full gradient-descent
    step per two rounds."""
    strategy = FedAMD(anchor_schedule="periodic", anchor_period=2, sample_size=3, local_steps=1)
    backend = run(strategy, rounds=4)
    expected = torch.zeros(6)
    for _ in range(2):
        expected = expected - LR * full_gradient(expected)
    torch.testing.assert_close(backend.params[3], expected)


def test_full_batch_miners_telescope_to_the_variance_reduced_step():
    """With the same (full) batch at every step, v_k = g - grad f_m(x) + grad f_m(y_k): the
    miners' K steps by hand, then the server's uniform mean over them."""
    strategy = FedAMD(anchor_probability=0.0, sample_size=3, local_steps=3)
    backend = run(strategy, rounds=1)
    x = torch.zeros(6)
    target = full_gradient(x)
    miners = []
    for shard in SHARDS:
        y = x.clone()
        for _ in range(3):
            y = y - LR * (target - loss_gradient(x, shard) + loss_gradient(y, shard))
        miners.append(y)
    torch.testing.assert_close(backend.params[:3], torch.stack(miners))
    torch.testing.assert_close(backend.params[3], torch.stack(miners).mean(dim=0))


def test_a_miners_recursion_takes_both_gradients_on_the_steps_own_mini_batch():
    """Batch 1 on node 2 (two examples): v_0 = g, v_k = v_{k-1} - grad(y_{k-1}; xi_k) +
    grad(y_k; xi_k), with xi_k the example fedsim's schedule gives step k."""
    the_task = task(batch_size=1)
    strategy = FedAMD(anchor_probability=0.0, sample_size=3, local_steps=3)
    backend = run(strategy, rounds=1, the_task=the_task)
    batches = local_batches(
        the_task.node_data, torch.tensor([2]), seed=0, round_idx=0, batch_size=1, steps=3
    )
    picks = batches.indices[0, :, 0].tolist()
    assert len(set(picks)) == 2  # both examples appear, so the recursion is not telescoping
    x = torch.zeros(6)
    previous, y, v = x, x.clone(), full_gradient(x)
    for step, pick in enumerate(picks):
        if step:
            v = v - loss_gradient(previous, [pick]) + loss_gradient(y, [pick])
        previous, y = y, y - LR * v
    torch.testing.assert_close(backend.params[2], y)


def test_anchors_never_move_the_model_and_refresh_from_the_next_round():
    """Round 1 with every client an anchor at x_1: x stays x_1, and g becomes grad F(x_1)."""
    strategy = FedAMD(anchor_schedule="periodic", anchor_period=2, sample_size=3, local_steps=1)
    backend = run(strategy, rounds=2)  # round 0: anchors at x_0; round 1: miners, x_1 moves
    x_one = backend.params[3].clone()
    federation = path_federation(task())
    backend.execute(strategy.plan(2, federation), 2)  # every client an anchor
    assert torch.equal(backend.params[3], x_one)
    torch.testing.assert_close(backend.slot(TARGET)[3], full_gradient(x_one))


def test_roles_are_bernoulli_per_node_reproducible_and_independent_of_the_others():
    federation = replace(path_federation(task()), num_nodes=100, num_examples=np.ones(100))
    strategy = FedAMD(anchor_probability=0.2, sample_size=100)
    everyone = np.arange(100)
    draws = np.stack([strategy.anchors(r, everyone, federation) for r in range(200)])
    assert abs(draws.mean() - 0.2) < 0.01  # 20,000 draws: 3 standard deviations is 0.0085
    again = FedAMD(anchor_probability=0.2).anchors(7, everyone[::3], federation)
    assert np.array_equal(again, draws[7, ::3])  # a node's role: (seed, round, node) alone
    other_seed = replace(federation, seed=1)
    assert not np.array_equal(strategy.anchors(7, everyone, other_seed), draws[7])
    periodic = FedAMD(anchor_schedule="periodic", anchor_period=3)
    assert [periodic.anchors(r, everyone[:2], federation).tolist() for r in range(4)] == [
        [True, True], [False, False], [False, False], [True, True],
    ]  # fmt: skip


def test_the_official_codes_probabilities():
    """main_emnist.py: optb and optc in closed form; opta as its fmin from 0.5 finds it
    (0.810645 for M = 20, A = 10, to fmin's tolerance); ts, the sequential schedule."""
    assert anchor_probability("optb", 20, 10) == pytest.approx(math.sqrt(20) - 4)
    assert anchor_probability("optc", 20, 10) == pytest.approx((1 / 6) ** 0.1)
    assert anchor_probability("opta", 20, 10) == pytest.approx(0.810645, abs=1e-4)
    federation = path_federation(task())
    sequential = FedAMD(anchor_schedule="sequential")
    assert sequential.probability_at(0, federation) == pytest.approx(1 / math.log(2.8))
    assert sequential.probability_at(100, federation) == pytest.approx(1 / math.log(114 / 5))


def test_bytes_per_role_and_a_resumed_run_matches(tmp_path):
    """Recorded traffic: round 0 adds every client's x_0 down and b_m up; then an anchor
    costs a model down and a gradient up, a miner a model and g_t down and a model up."""
    config = compose_config(
        "strategy=fedamd", "num_nodes=4", "rounds=3", "eval_every=1", "checkpoint_every=1",
        "model=logreg", "optimizer.batch_size=512", "strategy.sample_size=3",
        "strategy.local_steps=2", "strategy.anchor_probability=0.5",
    )  # fmt: skip
    whole, again = whole_and_resumed(config, tmp_path, killed_after=1)
    totals = whole[whole.node.isna()].pivot_table(index="round", columns="metric", values="value")
    simulation = build_simulation(config)
    strategy, federation = simulation.strategy, simulation.federation
    message = federation.message_bytes
    down, up, anchors = [0.0], [0.0], [0]
    for round_idx in range(3):
        sampled = strategy.sample(round_idx, federation)
        is_anchor = strategy.anchors(round_idx, sampled, federation)
        first = 4 if round_idx == 0 else 0
        down.append(down[-1] + message * (first + len(sampled) + (~is_anchor).sum()))
        up.append(up[-1] + message * (first + len(sampled)))
        anchors.append(anchors[-1] + is_anchor.sum())
    assert 0 < anchors[-1] < 9  # both roles occur
    assert totals.bytes_downlink_total.tolist() == down
    assert totals.bytes_uplink_total.tolist() == up
    assert totals.anchors.tolist()[1:] == anchors[1:]
    pd.testing.assert_frame_equal(whole, again)


@pytest.mark.parametrize("probability", [0.0, 0.5])
def test_vectorised_and_loop_trainers_agree(probability):
    the_task = task(batch_size=1)
    strategy = FedAMD(anchor_probability=probability, sample_size=3, local_steps=3)
    federation = path_federation(the_task)
    rows = []
    for vectorise in (True, False):
        backend = started_backend(the_task, num_rows=4, zero=True, vectorise=vectorise)
        for round_idx in range(3):
            backend.execute(strategy.plan(round_idx, federation), round_idx)
        rows.append(torch.cat([backend.params, backend.slot(BULLSEYE), backend.slot(TARGET)]))
    torch.testing.assert_close(rows[0], rows[1])


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"anchor_schedule": "always"}, "strategy.anchor_schedule='always' is not one of"),
        ({"anchor_probability": 1.5}, r"strategy.anchor_probability=1.5 must lie in \[0, 1\]"),
        ({"anchor_period": 3}, "set a period .* with periodic only"),
        ({"anchor_schedule": "periodic"}, "set a period .* with periodic only"),
        ({"anchor_schedule": "periodic", "anchor_period": 1}, "anchor_period=1 must be"),
        ({"server_lr": 0.0}, "strategy.server_lr=0.0 must be > 0"),
    ],
)
def test_bad_settings_fail_in_one_line(settings, message):
    with pytest.raises(ConfigError, match=message):
        FedAMD(**settings)


def test_momentum_and_weight_decay_are_refused():
    federation = replace(path_federation(task()), momentum=0.9)
    with pytest.raises(ConfigError, match="optimizer.momentum=0.9: strategy=fedamd"):
        FedAMD(sample_size=3).validate(federation)
    with pytest.raises(ConfigError, match="set optimizer.weight_decay=0"):
        decaying = task(batch_size=1, weight_decay=0.1)
        run_rounds(FedAMD(sample_size=3), 1, decaying, zero=False)  # x_0 != 0: decay moves it
