"""FedAvgM, FedAdagrad, FedAdam and FedYogi: the server optimizers of the FedOpt family."""

import numpy as np
import pytest
import torch
from conftest import compose_config
from helpers import path_federation, run_rounds, started_backend, zero_logreg_task

from fedsim import checkpoint
from fedsim.build import build_simulation
from fedsim.errors import ConfigError
from fedsim.server_optimizers import (
    ServerAdagrad,
    ServerAdam,
    ServerMomentum,
    ServerYogi,
    server_step,
)
from fedsim.strategies import FedAvg
from fedsim.strategies.fedopt import FedAdagrad, FedAdam, FedAvgM, FedYogi

X = torch.tensor([[1.0, 2.0, 3.0]], dtype=torch.float64)
AVERAGE = torch.tensor([2.0, 0.0, 3.5], dtype=torch.float64)  # delta = [1, -2, 0.5]
DELTA = np.array([1.0, -2.0, 0.5])
LR, BETA1, BETA2, TAU = 0.1, 0.9, 0.99, 1e-3


@pytest.mark.parametrize(
    "optimizer, v",
    [
        (ServerAdagrad(LR, BETA1, 0.0, TAU), TAU**2 + DELTA**2),
        (ServerAdam(LR, BETA1, BETA2, TAU), BETA2 * TAU**2 + (1 - BETA2) * DELTA**2),
        # Yogi: v - (1 - beta2) delta^2 sign(v - delta^2), with v = tau^2 < delta^2
        (ServerYogi(LR, BETA1, BETA2, TAU), TAU**2 + (1 - BETA2) * DELTA**2),
    ],
    ids=["adagrad", "adam", "yogi"],
)
def test_one_adaptive_server_step_is_the_papers_formula(optimizer, v):
    """Reddi et al. Algorithm 2 from m = 0, v = tau^2: x + lr m / (sqrt(v) + tau)."""
    states = {}
    moved = server_step(optimizer, X, AVERAGE, states)
    m = (1 - BETA1) * DELTA
    np.testing.assert_allclose(moved[0].numpy(), X[0].numpy() + LR * m / (np.sqrt(v) + TAU))
    (state,) = states.values()
    np.testing.assert_allclose(state["m"][0].numpy(), m)
    np.testing.assert_allclose(state["v"][0].numpy(), v)


def test_adam_bias_correction_is_kingma_and_bas_at_step_t():
    corrected, states = ServerAdam(LR, BETA1, BETA2, TAU, v0=0.0, bias_correction=True), {}
    server_step(corrected, X, AVERAGE, states)
    second = server_step(corrected, X, AVERAGE, states)
    m = BETA1 * (1 - BETA1) * DELTA + (1 - BETA1) * DELTA
    v = BETA2 * (1 - BETA2) * DELTA**2 + (1 - BETA2) * DELTA**2
    m_hat, v_hat = m / (1 - BETA1**2), v / (1 - BETA2**2)
    expected = X[0].numpy() + LR * m_hat / (np.sqrt(v_hat) + TAU)
    np.testing.assert_allclose(second[0].numpy(), expected)


def test_yogi_second_moment_shrinks_when_it_exceeds_the_squared_delta():
    states = {}
    yogi = ServerYogi(LR, BETA1, BETA2, TAU, v0=10.0)
    server_step(yogi, X, AVERAGE, states)
    expected = 10.0 - (1 - BETA2) * DELTA**2  # sign(10 - delta^2) = +1
    np.testing.assert_allclose(states["params/ServerYogi"]["v"][0].numpy(), expected)


def test_server_momentum_by_hand():
    """u <- beta u + g with g = x - average; x <- x - lr u (PyTorch's SGD convention)."""
    momentum, states = ServerMomentum(lr=0.5, momentum=0.9), {}
    first = server_step(momentum, X, AVERAGE, states)
    np.testing.assert_allclose(first[0].numpy(), X[0].numpy() + 0.5 * DELTA)
    second = server_step(momentum, first, first[0] + torch.from_numpy(DELTA), states)
    np.testing.assert_allclose(second[0].numpy(), first[0].numpy() + 0.5 * (0.9 + 1) * DELTA)


def test_fedavgm_without_momentum_and_with_server_lr_1_is_fedavg():
    fedavg = run_rounds(FedAvg(sample_size=2))
    fedavgm = run_rounds(
        FedAvgM(server_lr=1.0, server_momentum=0.0, sample_size=2, weighting="num_examples")
    )
    torch.testing.assert_close(fedavgm.params, fedavg.params, rtol=0, atol=1e-6)


def test_the_server_optimizer_moves_only_the_server_row():
    """Clients start from the server's model and send their trained models, as in FedAvg:
    the plans differ only in the server's update."""
    federation = path_federation(zero_logreg_task())
    fedadam = FedAdam(sample_size=2).plan(0, federation).steps
    fedavg = FedAvg(sample_size=2, weighting="uniform").plan(0, federation).steps
    assert fedadam[2].update == ServerAdam() and fedavg[2].update is None
    for ours, theirs in zip(fedadam, fedavg, strict=True):
        assert ours.messages(3).sent(4).tolist() == theirs.messages(3).sent(4).tolist()


@pytest.mark.parametrize("strategy", [FedAvgM, FedAdagrad, FedAdam, FedYogi])
def test_server_state_survives_a_checkpoint(strategy, tmp_path):
    """Two rounds, a checkpoint written and loaded as `fedsim resume` does, two more rounds:
    the same server model as four rounds straight (momentum and moments restored)."""
    straight = run_rounds(strategy(sample_size=2), rounds=4)
    first = run_rounds(strategy(sample_size=2), rounds=2)
    checkpoint.save(tmp_path, {"rounds_completed": 2, "backend": first.state()})
    resumed = started_backend(zero_logreg_task(lr=0.5), num_rows=4)
    resumed.restore(checkpoint.load(tmp_path)["backend"])
    federation = path_federation(zero_logreg_task())
    for round_idx in (2, 3):
        resumed.execute(strategy(sample_size=2).plan(round_idx, federation), round_idx)
    assert torch.equal(resumed.params, straight.params)


@pytest.mark.parametrize(
    "override, message",
    [
        ("strategy=fedadam strategy.beta2=1", "strategy.beta2=1.0 must lie in \\[0, 1\\)"),
        ("strategy=fedyogi strategy.tau=0", "strategy.tau=0.0 must be > 0"),
        ("strategy=fedavgm strategy.server_lr=-1", "strategy.server_lr=-1.0 must be > 0"),
        ("strategy=fedadagrad strategy.v0=-1", "strategy.v0=-1.0 must be >= 0 or null"),
    ],
)
def test_bad_server_settings_are_refused_in_one_line(override, message):
    with pytest.raises(ConfigError, match=message):
        build_simulation(compose_config(*override.split(), "num_nodes=12"))
