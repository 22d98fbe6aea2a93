"""Each learning-rate schedule gives torch.optim.lr_scheduler's rates; by round every local
step of a round takes that round's rate, by local step each node's own count indexes it;
SCAFFOLD's option II divides by the rate actually used; bad settings stop in one line."""

from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import compose_config
from helpers import started_backend, zero_logreg_task
from torch.optim import lr_scheduler

from fedsim.build import build_simulation
from fedsim.errors import ConfigError
from fedsim.plans import Train
from fedsim.training.lr_schedule import Constant, Cosine, Exponential, StepDecay
from fedsim.training.sgd import SGD
from fedsim.training.transforms import GradientTransform

LR = 0.1


def torch_rates(make, rounds):
    """The rate of torch's scheduler ``make(optimizer)`` at epochs 0 .. rounds - 1."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=LR)
    scheduler = make(optimizer)
    rates = []
    for _ in range(rounds):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates


@pytest.mark.parametrize(
    "schedule, make",
    [
        (Constant(), lambda o: lr_scheduler.ConstantLR(o, factor=1.0)),
        (StepDecay(gamma=0.5, step_size=3), lambda o: lr_scheduler.StepLR(o, 3, gamma=0.5)),
        (Exponential(gamma=0.9), lambda o: lr_scheduler.ExponentialLR(o, gamma=0.9)),
        (
            Cosine(period=10, eta_min=0.01),
            lambda o: lr_scheduler.CosineAnnealingLR(o, T_max=10, eta_min=0.01),
        ),
        (
            Exponential(gamma=0.9, warmup=4),
            lambda o: lr_scheduler.ChainedScheduler(
                [
                    lr_scheduler.LinearLR(o, start_factor=1 / 4, total_iters=3),
                    lr_scheduler.ExponentialLR(o, gamma=0.9),
                ]
            ),
        ),
        (
            Constant(warmup=5),
            lambda o: lr_scheduler.LinearLR(o, start_factor=1 / 5, total_iters=4),
        ),
    ],
    ids=["constant", "step", "exponential", "cosine", "exponential-warmup", "constant-warmup"],
)
def test_each_schedule_gives_torchs_rates(schedule, make):
    rounds = 11 if isinstance(schedule, Cosine) else 25  # torch's cosine rises after T_max
    expected = torch_rates(make, rounds)
    assert [schedule.round_rate(LR, t) for t in range(rounds)] == pytest.approx(expected, rel=1e-12)


def test_cosine_stays_at_eta_min_after_its_period():
    schedule = Cosine(period=4, eta_min=0.01)
    assert [schedule.round_rate(LR, t) for t in (4, 5, 40)] == pytest.approx([0.01] * 3)


def test_constant_rate_is_the_base_rate_exactly():
    assert Constant().round_rate(0.05, 7) == 0.05


def test_by_local_step_each_node_counts_its_own_steps():
    schedule = Exponential(gamma=0.5, by="local_step")
    active = torch.tensor([[True, True, True], [True, False, False]])
    rates = schedule.step_rates(1.0, 9, torch.tensor([0, 5]), active)
    assert rates[0].tolist() == [1.0, 0.5, 0.25]
    assert rates[1, 0] == 0.5**5
    mean = schedule.mean_rate(1.0, 9, rates, active)
    assert mean.tolist() == pytest.approx([1.75 / 3, 0.5**5])


def test_by_round_every_step_of_the_round_takes_its_rate():
    schedule = StepDecay(gamma=0.5, step_size=2)
    rates = schedule.step_rates(1.0, 5, None, torch.ones(2, 3, dtype=torch.bool))
    assert rates.eq(0.25).all()
    assert schedule.mean_rate(1.0, 5, rates, torch.ones(2, 3, dtype=torch.bool)) == 0.25


def train(task, round_idx, **options):
    backend = started_backend(task, 3)
    backend.train(Train(np.arange(3), epochs=2, **options), round_idx)
    return backend


def test_a_round_trains_at_its_scheduled_rate():
    """Round 3 of an exponential schedule is plain SGD at lr gamma^3, bit for bit."""
    task = zero_logreg_task(lr=0.5)
    scheduled = train(replace(task, lr_schedule=Exponential(gamma=0.5)), round_idx=3)
    plain = train(replace(task, optimizer=SGD(lr=0.5 * 0.125, batch_size=4)), round_idx=3)
    assert torch.equal(scheduled.params, plain.params)


class RecordRate(GradientTransform):
    """Leaves gradients alone and records the rate its finish hook is given."""

    def __init__(self):
        self.rates = []

    def __call__(self, grads, params, start, slots):
        return grads

    def finish(self, params, start, steps, lr, slots):
        self.rates.append(lr)


def test_transforms_finish_with_the_rate_actually_used():
    """SCAFFOLD's option II divides by K lr: the scheduled rate, or per node the mean rate."""
    recorder = RecordRate()
    task = zero_logreg_task(lr=0.5)
    train(replace(task, lr_schedule=StepDecay(gamma=0.1, step_size=2)), 4, transforms=(recorder,))
    assert recorder.rates == [pytest.approx(0.5 * 0.01)]

    by_step = replace(task, lr_schedule=Exponential(gamma=0.5, by="local_step"))
    train(replace(by_step, optimizer=SGD(lr=0.5, batch_size=1)), 4, transforms=(recorder,))
    # Nodes 0 and 1 take 2 steps (rates 0.5, 0.25), node 2 takes 4.
    means = [0.75 / 2, 0.75 / 2, 0.5 * (1 + 0.5 + 0.25 + 0.125) / 4]
    assert recorder.rates[1].tolist() == pytest.approx(means)


def test_by_local_step_the_backend_counts_every_rows_steps():
    task = replace(
        zero_logreg_task(),
        optimizer=SGD(lr=0.5, batch_size=1),
        lr_schedule=Exponential(gamma=0.5, by="local_step"),
    )
    backend = started_backend(task, 4)  # a fourth row: a server's, never trained
    backend.train(Train(np.arange(3), epochs=1), round_idx=0)
    backend.train(Train(np.array([2]), epochs=1), round_idx=1)
    assert backend.local_steps.tolist() == [1, 1, 4, 0]


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["lr_schedule=step", "lr_schedule.gamma=0"], "lr_schedule.gamma=0.0 must be > 0"),
        (["lr_schedule=exponential", "lr_schedule.gamma=-1"], "lr_schedule.gamma=-1.0 must be"),
        (["lr_schedule=step", "lr_schedule.step_size=0"], "lr_schedule.step_size=0 must be >= 1"),
        (["lr_schedule=cosine", "lr_schedule.period=0"], "lr_schedule.period=0 must be >= 1"),
        (["lr_schedule=cosine", "lr_schedule.eta_min=-1"], "lr_schedule.eta_min=-1.0 must be"),
        (["lr_schedule.warmup=-2"], "lr_schedule.warmup=-2 must be >= 0"),
        (["lr_schedule.by=epoch"], "lr_schedule.by=epoch is not one of: round, local_step"),
    ],
)
def test_bad_schedule_settings_stop_in_one_line(overrides, message):
    with pytest.raises(ConfigError) as error:
        build_simulation(compose_config("num_nodes=12", *overrides))
    assert message in str(error.value) and "\n" not in str(error.value)


def test_cosine_lasts_the_run_by_default():
    simulation = build_simulation(compose_config("num_nodes=12", "rounds=7", "lr_schedule=cosine"))
    assert simulation.task.lr_schedule.period == 7
