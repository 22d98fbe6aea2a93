"""Adam and AdamW equal torch.optim step for step; every local optimizer trains alike in the
vectorised and the loop trainer; the backend resets, keeps and checkpoints their state;
bad settings stop in one line; the default run (SGD, constant rate) records what it did
before optimizers had named states."""

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import compose_config
from helpers import started_backend, zero_logreg_task

from fedsim.build import build_simulation
from fedsim.errors import ConfigError
from fedsim.models import mlp
from fedsim.plans import Train
from fedsim.runner import run_job
from fedsim.training.adam import Adam, AdamW
from fedsim.training.layout import ParameterLayout
from fedsim.training.loop import LoopTrainer
from fedsim.training.lr_schedule import Exponential
from fedsim.training.schedule import NodeData, local_batches
from fedsim.training.sgd import SGD
from fedsim.training.vectorised import VectorisedTrainer

SIZES = (7, 33, 5)  # a row's tensors, of lengths that leave SIMD remainders

ADAMS = [
    Adam(lr=0.01),
    Adam(lr=0.01, weight_decay=0.1),
    AdamW(lr=0.01),
    AdamW(lr=0.02, betas=(0.5, 0.9), eps=1e-6, weight_decay=0.3),
]


def torch_twin(optimizer, row):
    """``row`` as separate tensors, with the torch.optim twin of ``optimizer`` over them."""
    weights = [torch.nn.Parameter(part.clone()) for part in row.split(SIZES)]
    return weights, optimizer.torch_optimizer(weights)


@pytest.mark.parametrize("optimizer", ADAMS, ids=["adam", "adam-l2", "adamw", "adamw-custom"])
def test_adam_steps_equal_torch_optim_on_the_same_gradients(optimizer):
    """Ten steps at changing rates, nodes padding (inactive) at some of them; the last node
    never steps and keeps its row and its fresh state."""
    generator = torch.Generator().manual_seed(0)
    params = torch.randn(5, sum(SIZES), generator=generator)
    start = params.clone()
    twins = [torch_twin(optimizer, row) for row in params]
    state = optimizer.init(params)
    for step in range(10):
        grads = torch.randn(params.shape, generator=generator)
        active = torch.tensor([True, step < 6, step % 2 == 0, step < 2, False])
        lr = torch.tensor([0.01, 0.02, 0.005, 0.01, 0.01], dtype=torch.float64) * 0.9**step
        optimizer.step(params, grads, state, active, lr)
        for node in np.flatnonzero(active.numpy()):
            weights, twin = twins[node]
            twin.param_groups[0]["lr"] = float(lr[node])
            for weight, grad in zip(weights, grads[node].split(SIZES), strict=True):
                weight.grad = grad.clone()
            twin.step()

    expected = torch.stack([torch.cat([w.detach() for w in weights]) for weights, _ in twins])
    torch.testing.assert_close(params, expected, rtol=0, atol=0)
    for name in ("exp_avg", "exp_avg_sq"):
        saved = [torch.cat([twin.state[w][name] for w in weights]) for weights, twin in twins[:4]]
        torch.testing.assert_close(state[name][:4], torch.stack(saved), rtol=0, atol=0)
    assert state["step"].tolist() == [10, 6, 5, 2, 0]
    assert torch.equal(params[4], start[4])
    assert not state["exp_avg"][4].any() and not state["exp_avg_sq"][4].any()


def test_adamw_defaults_are_torchs():
    assert (Adam().betas, Adam().eps, Adam().weight_decay) == ((0.9, 0.999), 1e-8, 0.0)
    assert AdamW().weight_decay == 0.01
    assert isinstance(
        AdamW().torch_optimizer([torch.nn.Parameter(torch.ones(1))]), torch.optim.AdamW
    )


def initial_state(optimizer, params, generator):
    """A state as a node keeps it across rounds: non-zero, with unequal step counts."""
    state = optimizer.init(params)
    for name, rows in state.items():
        if name == "step":
            rows.copy_(torch.tensor([0, 3, 1, 7, 2]))
        else:
            rows.copy_(0.01 * torch.rand(rows.shape, generator=generator))
    return state


@pytest.mark.parametrize(
    "optimizer",
    [SGD(lr=0.05, momentum=0.9, weight_decay=1e-3, batch_size=3), *ADAMS],
    ids=["sgd", "adam", "adam-l2", "adamw", "adamw-custom"],
)
def test_vectorised_equals_loop_at_scheduled_rates(optimizer):
    """Unequal data (padding steps), carried state, a rate that decays with each node's
    own local steps."""
    optimizer = replace(optimizer, batch_size=3)
    torch.manual_seed(0)
    model = mlp((8,), 3, (16, 8))
    layout = ParameterLayout.of(model)
    generator = torch.Generator().manual_seed(1)
    train_x = torch.rand(60, 8, generator=generator)
    train_y = torch.randint(0, 3, (60,), generator=generator)
    data = NodeData.from_shards(np.split(np.arange(60), [7, 10, 30, 31]))
    params = layout.flatten(model) + 0.1 * torch.randn(5, layout.size, generator=generator)
    batches = local_batches(data, torch.arange(5), seed=1, round_idx=2, batch_size=3, epochs=1)
    schedule = Exponential(gamma=0.8, by="local_step")
    rates = schedule.step_rates(optimizer.lr, 2, torch.tensor([0, 4, 9, 1, 2]), batches.active)
    state = initial_state(optimizer, params, generator)

    vectorised, vectorised_state = params.clone(), {k: v.clone() for k, v in state.items()}
    VectorisedTrainer(model, layout, optimizer).train(
        vectorised, vectorised_state, batches, train_x, train_y, lr=rates
    )
    looped, looped_state = params.clone(), {k: v.clone() for k, v in state.items()}
    LoopTrainer(model, layout, optimizer).train(
        looped, looped_state, batches, train_x, train_y, lr=rates
    )

    assert not torch.allclose(vectorised, params)
    torch.testing.assert_close(vectorised, looped, rtol=1e-5, atol=1e-6)
    for name in state:
        torch.testing.assert_close(vectorised_state[name], looped_state[name], rtol=1e-5, atol=1e-6)
    if "step" in state:
        assert torch.equal(vectorised_state["step"], state["step"] + batches.active.sum(dim=1))


def adam_task(**settings):
    """The three-node logistic regression of tests/helpers.py, trained by Adam."""
    return replace(zero_logreg_task(), optimizer=Adam(lr=0.1, batch_size=1), **settings)


def everyone(fresh_optimizer):
    return Train(np.arange(3), epochs=1, fresh_optimizer=fresh_optimizer)


def test_fresh_optimizer_resets_the_moments_and_the_bias_correction():
    backend = started_backend(adam_task(), 3)
    backend.train(everyone(False), round_idx=0)
    backend.train(everyone(False), round_idx=1)
    assert backend.optimizer_state["step"].tolist() == [2, 2, 4]  # node 2 has two batches
    after_two = backend.params.clone()
    backend.train(everyone(True), round_idx=2)
    assert backend.optimizer_state["step"].tolist() == [1, 1, 2]

    restarted = started_backend(adam_task(), 3)  # zero moments, k restarting at 1
    restarted.params.copy_(after_two)
    restarted.train(everyone(False), round_idx=2)
    assert torch.equal(backend.params, restarted.params)
    for name, rows in restarted.optimizer_state.items():
        assert torch.equal(backend.optimizer_state[name], rows)


def test_kept_state_carries_over_rounds():
    kept, fresh = started_backend(adam_task(), 3), started_backend(adam_task(), 3)
    for round_idx in range(2):
        kept.train(everyone(False), round_idx)
        fresh.train(everyone(True), round_idx)
    assert not torch.equal(kept.params, fresh.params)


@pytest.mark.parametrize("by", ["round", "local_step"])
def test_optimizer_state_and_local_steps_survive_a_checkpoint(by):
    task = adam_task(lr_schedule=Exponential(gamma=0.5, by=by))
    whole = started_backend(task, 3)
    whole.train(everyone(False), round_idx=0)
    whole.train(everyone(False), round_idx=1)

    first = started_backend(task, 3)
    first.train(everyone(False), round_idx=0)
    saved = first.state()
    assert set(saved["optimizer"]) == {"exp_avg", "exp_avg_sq", "step"}
    resumed = started_backend(task, 3)
    resumed.restore(saved)
    resumed.train(everyone(False), round_idx=1)

    assert torch.equal(resumed.params, whole.params)
    for name, rows in whole.optimizer_state.items():
        assert torch.equal(resumed.optimizer_state[name], rows)
    if by == "local_step":
        assert whole.local_steps.tolist() == resumed.local_steps.tolist() == [2, 2, 4]
    else:
        assert whole.local_steps is None and saved["local_steps"] is None


def test_a_checkpoint_that_names_momentum_alone_still_restores():
    task = replace(zero_logreg_task(), optimizer=SGD(lr=0.1, momentum=0.9, batch_size=1))
    first = started_backend(task, 3)
    first.train(everyone(False), round_idx=0)
    saved = first.state()
    saved["momentum"] = saved.pop("optimizer")["momentum"]  # as checkpoints were written
    resumed = started_backend(task, 3)
    resumed.restore(saved)
    assert torch.equal(resumed.momentum, first.momentum)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            ["optimizer=adam", "optimizer.betas=[0.9,1.0]"],
            "optimizer.betas=[0.9, 1.0] must be two numbers in [0, 1)",
        ),
        (["optimizer=adam", "optimizer.betas=[0.9]"], "must be two numbers in [0, 1)"),
        (["optimizer=adamw", "optimizer.eps=0"], "optimizer.eps=0.0 must be > 0"),
        (["optimizer=adamw", "optimizer.weight_decay=-1"], "optimizer.weight_decay=-1.0 must be"),
        (
            ["optimizer=adam", "strategy=scaffold"],
            "strategy=Scaffold assumes local SGD (with or without momentum); use optimizer=sgd",
        ),
        (["optimizer=adamw", "strategy=fednova"], "strategy=FedNova assumes local SGD"),
    ],
)
def test_bad_optimizer_settings_stop_in_one_line(overrides, message):
    with pytest.raises(ConfigError) as error:
        build_simulation(compose_config("num_nodes=12", *overrides))
    assert message in str(error.value) and "\n" not in str(error.value)


@pytest.mark.slow
@pytest.mark.parametrize("optimizer", ["adam", "adamw"])
def test_adam_runs_on_either_trainer_to_the_same_metrics(optimizer, tmp_path):
    common = (
        "num_nodes=6", "strategy.sample_size=4", "rounds=2", "eval_every=1",
        f"optimizer={optimizer}", "lr_schedule=exponential", "lr_schedule.gamma=0.5",
        "strategy.fresh_optimizer=false",
    )  # fmt: skip
    runs = {}
    for vectorise in ("true", "false"):
        run_dir = tmp_path / vectorise
        run_job(compose_config(*common, f"backend.vectorise={vectorise}"), run_dir)
        rows = pd.read_parquet(run_dir / "metrics.parquet")
        runs[vectorise] = rows[rows.metric.isin(["loss", "accuracy", "consensus_distance"])]
    pd.testing.assert_frame_equal(runs["true"], runs["false"], rtol=1e-4)
    assert runs["true"].query("metric == 'loss'").value.is_monotonic_decreasing


# Round 4 of `fedsim run num_nodes=12 rounds=4`, recorded before optimizers had named states.
DEFAULT_RUN = {
    "accuracy": 0.8361111283302307,
    "loss": 1.6171317100524902,
    "node_accuracy_mean": 0.6115740537643433,
    "node_accuracy_min": 0.3305555582046509,
    "node_accuracy_max": 0.7250000238418579,
    "consensus_distance": 0.21032452583312988,
}


def test_the_default_run_records_what_it_did_before(tmp_path):
    run_job(compose_config("num_nodes=12", "rounds=4"), tmp_path)
    rows = pd.read_parquet(tmp_path / "metrics.parquet").query("round == 4 and node.isna()")
    recorded = dict(zip(rows.metric, rows.value, strict=True))
    assert {name: recorded[name] for name in DEFAULT_RUN} == pytest.approx(DEFAULT_RUN, rel=1e-6)
