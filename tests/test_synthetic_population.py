"""A population of LEAF Synthetic users generated on demand follows the generator's rule,
does not depend on a user's companions, and trains as its materialised examples would."""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import compose_config
from scipy import stats

from fedsim.build import build_simulation
from fedsim.errors import ConfigError
from fedsim.metrics.recorder import Recorder
from fedsim.partitions import population_synthetic, synthetic_population
from fedsim.partitions.population import client_sizes
from fedsim.partitions.synthetic_population import SyntheticPopulation, train_counts
from fedsim.training.evaluate import Evaluator
from fedsim.training.schedule import NodeData, local_batches

GENERATOR = {"alpha": 1.0, "beta": 1.0, "dimension": 6, "num_classes": 4, "test_fraction": 0.2}
LABELS = np.zeros(1, dtype=np.int64)  # the data set's labels, not read


def population(num_nodes=20, seed=3, **settings):
    return population_synthetic(LABELS, num_nodes, seed, **{**GENERATOR, **settings})


def test_labels_are_the_argmax_of_each_users_own_softmax_model():
    users = population(max_examples_per_client=80)
    nodes = torch.arange(20)
    inputs, labels = users.examples(None, nodes)
    models = users.scheme.models(users.seed, nodes)
    owner = torch.repeat_interleave(nodes, users.counts.to(torch.int64))
    logits = torch.einsum("rcd,rd->rc", models.weights[owner], inputs.double())
    assert torch.equal((logits + models.bias[owner]).argmax(dim=1), labels)
    assert len(labels) == int(users.counts.sum()) and inputs.dtype == torch.float32
    # Not one model for all: the users' labels differ in their majority class.
    majority = {int(torch.mode(labels[owner == k]).values) for k in range(20)}
    assert len(majority) > 1


def test_the_draws_have_leafs_means_and_spreads():
    """u_k ~ N(0, alpha), B_k ~ N(0, beta), W_k, b_k ~ N(u_k, 1), v_k ~ N(B_k, 1) and
    x ~ N(v_k, diag(j^-1.2)), over 3000 users (alpha 2, beta 0.5)."""
    users = population(num_nodes=3000, alpha=2.0, beta=0.5, examples_per_client=4)
    nodes = torch.arange(3000)
    models = users.scheme.models(users.seed, nodes)
    standard = {
        "u": models.model_means / 2.0,
        "B": models.input_shifts / 0.5,
        "W": (models.weights - models.model_means[:, None, None]).flatten(),
        "b": (models.bias - models.model_means[:, None]).flatten(),
        "v": (models.input_means - models.input_shifts[:, None]).flatten(),
    }
    inputs, _ = users.examples(None, nodes)
    owner = torch.repeat_interleave(nodes, users.counts.to(torch.int64))
    scales = torch.arange(1, 7, dtype=torch.float64) ** -0.6
    standard["x"] = ((inputs.double() - models.input_means[owner]) / scales).flatten()
    for name, draws in standard.items():
        assert stats.kstest(draws.numpy(), "norm").pvalue > 1e-3, name


def test_a_users_examples_do_not_depend_on_its_companions_or_their_order():
    users = population(num_nodes=1000, max_examples_per_client=300)
    alone = users.examples(None, torch.tensor([500]))
    for cohort in ([900, 500, 2], [500, 999, 0, 1], [1, 2, 3, 500][::-1], [500, 500]):
        inputs, labels = users.examples(None, torch.tensor(cohort))
        start = int(users.counts[cohort[: cohort.index(500)]].sum())
        rows = slice(start, start + int(users.counts[500]))
        assert torch.equal(inputs[rows], alone[0]) and torch.equal(labels[rows], alone[1])
    assert not torch.equal(users.examples(None, torch.tensor([501]))[0][:3], alone[0][:3])
    reseeded = population(num_nodes=1000, seed=4, max_examples_per_client=300)
    assert not torch.equal(reseeded.examples(None, torch.tensor([500]))[0][:3], alone[0][:3])


def test_examples_do_not_depend_on_how_many_are_formed_at_once(monkeypatch):
    users = population(max_examples_per_client=60)
    whole = users.examples(None, torch.arange(20))
    monkeypatch.setattr(synthetic_population, "_BLOCK_VALUES", 5 * 4 * 6)  # 5 examples a block
    blocks = users.examples(None, torch.arange(20))
    assert torch.equal(whole[0], blocks[0]) and torch.equal(whole[1], blocks[1])


def test_a_chunk_trains_on_the_batches_of_its_materialised_examples():
    users = population(max_examples_per_client=120)
    inputs, labels = users.examples(None, torch.arange(20))
    ends = np.cumsum(users.num_examples)
    packed = NodeData.from_shards(
        [np.arange(end - n, end) for n, end in zip(users.num_examples, ends, strict=True)]
    )
    cohort = torch.tensor([7, 3, 19, 11])
    for schedule in ({"epochs": 2}, {"steps": torch.tensor([5, 1, 9, 2])}):
        lazy, table = (
            local_batches(data, cohort, seed=4, round_idx=6, batch_size=8, **schedule)
            for data in (users, packed)
        )
        generated_x, generated_y = users.examples(None, cohort)
        assert torch.equal(lazy.mask, table.mask)
        real = lazy.mask > 0  # padding slots point at a chunk's first example, or the set's
        assert torch.equal(generated_x[lazy.indices[real]], inputs[table.indices[real]])
        assert torch.equal(generated_y[lazy.indices[real]], labels[table.indices[real]])


def test_sizes_are_leafs_less_each_users_test_part():
    assert train_counts(np.array([1, 2, 3, 10, 51]), 0.2).tolist() == [1, 1, 2, 8, 41]
    users = population(num_nodes=5000, seed=7)
    sizes = client_sizes(5000, 7, "lognormal")
    assert np.array_equal(users.num_examples, train_counts(sizes, 0.2))
    assert users.width == users.num_examples.max() and users.num_examples.min() >= 40
    capped = population(num_nodes=5000, seed=7, max_examples_per_client=100)
    assert capped.width == 80 and np.array_equal(
        capped.num_examples, train_counts(np.minimum(sizes, 100), 0.2)
    )
    assert population(examples_per_client=10).num_examples.tolist() == [8] * 20


def test_a_cohort_costs_its_examples_not_the_population():
    """Users of a population of 10^12 (sizes: one number, expanded; one byte per user would
    fail): generated as those of a small one, by construction."""
    users = population(num_nodes=10, examples_per_client=30)
    huge = replace(users, counts=users.counts[:1].expand(10**12))
    far = torch.tensor([10**12 - 1, 5 * 10**11, 4])
    inputs, labels = huge.examples(None, far)
    assert inputs.shape == (72, 6) and huge.indices(far).shape == (3, 24)
    assert torch.equal(inputs[48:], users.examples(None, torch.tensor([4]))[0])
    assert users.nbytes == 10 * 4  # one int32 size per user


def run(tmp_path: Path, *overrides: str):
    """A run of FedAvg on a population (users of at most 150 examples: local_batches costs
    steps x width, quadratic in the largest user) evaluated on data=synthetic's 20 users."""
    config = compose_config(
        "data=synthetic",
        "data.num_users=20",
        "partition=population_synthetic",
        "partition.max_examples_per_client=150",
        "backend.rows=on_demand",
        *overrides,
    )
    simulation = build_simulation(config)
    recorder = Recorder(tmp_path / "metrics.parquet")
    simulation.run(recorder, progress=False)
    recorder.close()
    return simulation, pd.read_parquet(tmp_path / "metrics.parquet")


def test_fedavg_runs_on_a_population_and_evaluates_on_the_data_sets_users(tmp_path):
    simulation, metrics = run(tmp_path, "num_nodes=2000", "rounds=2")
    assert isinstance(simulation.task.node_data, SyntheticPopulation)
    assert simulation.federation.num_nodes == 2000 > 20  # data=synthetic's users
    accuracy = metrics[metrics.metric == "accuracy"]
    assert accuracy["round"].tolist() == [0, 2] and accuracy.value.between(0, 1).all()
    assert metrics[metrics.metric == "bytes_sent_total"].value.iloc[-1] > 0


def test_fedavg_learns_its_clients_own_examples(tmp_path):
    """All 20 users train each round (FedProx's setting): the global model fits their
    examples far better than the initial one.  (A user's classes are exchangeable under the
    generator, so on users never trained on no global model beats the label prior.)"""
    simulation, _ = run(tmp_path, "num_nodes=20", "strategy.sample_size=20", "rounds=4")
    task = simulation.task
    own = Evaluator(task.model, task.layout, *task.node_data.examples(None, torch.arange(20)))
    initial, _ = own.model(task.initial_models(np.array([0]))[0])
    trained, _ = own.model(simulation.global_model())
    assert trained > initial + 0.25, (initial, trained)


def test_another_data_set_stops_the_build_with_one_config_error():
    config = compose_config("partition=population_synthetic", "num_nodes=12")  # data=digits
    with pytest.raises(ConfigError, match="generates users of data=synthetic") as raised:
        build_simulation(config)
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"max_examples_per_client": 0}, "partition.max_examples_per_client=0 must be"),
        ({"examples_per_client": "many"}, "partition.examples_per_client='many' is not one of"),
        ({"alpha": -1.0}, "partition.alpha=-1.0 must be >= 0"),
        ({"dimension": 0}, "partition.dimension=0 must be an integer >= 1"),
        ({"num_classes": 1}, "partition.num_classes=1 must be an integer >= 2"),
        ({"test_fraction": 1.0}, r"partition.test_fraction=1.0 must lie in \(0, 1\)"),
        ({"num_nodes": 0}, "num_nodes=0 must be >= 1"),
    ],
)
def test_bad_settings_give_one_config_error(settings, message):
    with pytest.raises(ConfigError, match=message):
        population(**settings)
