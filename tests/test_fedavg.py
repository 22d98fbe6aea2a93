import numpy as np
import pytest
import torch
from helpers import (
    TRAIN_X,
    TRAIN_Y,
    hand_gradient,
    path_federation,
    started_backend,
    zero_logreg_task,
)
from scipy import stats

from fedsim.errors import ConfigError
from fedsim.federation import Federation
from fedsim.plans import Average, Train
from fedsim.strategies import FedAvg


def test_plan_broadcasts_trains_and_averages_by_examples():
    task = zero_logreg_task()
    federation = path_federation(task)
    broadcast, train, average = FedAvg(sample_size=3).plan(0, federation).steps
    assert isinstance(broadcast, Average) and broadcast.sources.tolist() == [3]
    assert broadcast.targets.tolist() == [0, 1, 2]
    assert isinstance(train, Train) and train.fresh_optimizer and train.epochs == 1
    assert average.targets.tolist() == [3]
    assert average.weights.tolist() == [0.25, 0.25, 0.5]
    uniform = FedAvg(sample_size=3, weighting="uniform").plan(0, federation).steps[2]
    np.testing.assert_allclose(uniform.weights, [1 / 3] * 3)


def test_one_round_by_hand():
    task = zero_logreg_task(lr=0.5)
    federation = path_federation(task)
    backend = started_backend(task, num_rows=4, zero=True)
    backend.execute(FedAvg(sample_size=3, local_epochs=1).plan(0, federation), round_idx=0)
    # From zero weights each node takes one step on its (one distinct) example.
    local = [-0.5 * hand_gradient(TRAIN_X[i], int(TRAIN_Y[i])) for i in (0, 1, 2)]
    expected = 0.25 * local[0] + 0.25 * local[1] + 0.5 * local[2]
    torch.testing.assert_close(backend.params[3], expected)
    for node in range(3):
        torch.testing.assert_close(backend.params[node], local[node])


def test_sampling_is_uniform_without_replacement_and_seeded():
    task = zero_logreg_task()
    federation = path_federation(task)
    strategy = FedAvg(sample_size=2)
    samples = [tuple(strategy.plan(r, federation).steps[1].nodes) for r in range(300)]
    assert all(len(set(sample)) == 2 for sample in samples)
    counts = np.bincount(np.concatenate(samples), minlength=3) / 300
    np.testing.assert_allclose(counts, 2 / 3, atol=0.08)
    assert samples == [tuple(strategy.plan(r, federation).steps[1].nodes) for r in range(300)]


def test_a_population_is_sampled_uniformly_in_time_of_the_cohort():
    """Chi-square over 4,000 rounds of 5 of 40 clients; a billion clients sample as fast
    (an O(population) draw would need gigabytes)."""
    strategy, small = FedAvg(sample_size=5), Federation(40, 7, None, np.zeros(40))
    drawn = np.concatenate([strategy.sample(r, small) for r in range(4000)])
    assert stats.chisquare(np.bincount(drawn, minlength=40)).pvalue > 0.01
    huge = Federation(10**9, 7, None, np.zeros(0))
    cohort = strategy.sample(3, huge)
    assert len(np.unique(cohort)) == 5 and cohort.max() < 10**9
    assert np.array_equal(cohort, strategy.sample(3, huge))  # from (seed, round) alone


def test_fraction_picks_a_share_of_nodes():
    assert FedAvg(sample_size=None, fraction=0.1).sampling.of(100) == 10


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"sample_size": 0}, "strategy.sample_size=0 must be >= 1"),
        ({"sample_size": 5, "fraction": 0.5}, "set exactly one"),
        ({"fraction": 1.5, "sample_size": None}, "strategy.fraction=1.5"),
        ({"weighting": "size"}, "strategy.weighting='size' is not one of"),
        ({"local_epochs": 1, "local_steps": 2}, "set exactly one"),
        ({"local_epochs": 0}, "strategy.local_epochs=0 must be"),
    ],
)
def test_bad_settings_name_the_setting(settings, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("[", r"\[")):
        FedAvg(**settings)


def test_sample_size_above_num_nodes_is_rejected():
    task = zero_logreg_task()
    with pytest.raises(ConfigError, match="strategy.sample_size=4 must be <= num_nodes=3"):
        FedAvg(sample_size=4).validate(path_federation(task))
