"""Populations derived per client on demand equal their materialised partition, cost O(cohort)."""

from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import compose_config
from scipy import stats

from fedsim import rng
from fedsim.build import build_simulation
from fedsim.data.datasets import digits
from fedsim.errors import ConfigError
from fedsim.models import mlp
from fedsim.partitions import (
    label_histograms,
    population_classes,
    population_dirichlet,
    population_iid,
)
from fedsim.partitions.population import _SIZE_CHUNK, PopulationData, _log_gamma, client_sizes
from fedsim.task import Task
from fedsim.training.schedule import NodeData, local_batches
from fedsim.training.sgd import SGD

LABELS = digits().train_y.numpy()
PRIOR = np.bincount(LABELS) / len(LABELS)
SCHEMES = {
    "iid": lambda **kw: population_iid(LABELS, **kw),
    "dirichlet": lambda **kw: population_dirichlet(LABELS, alpha=0.3, **kw),
    "classes": lambda **kw: population_classes(LABELS, classes_per_client=3, **kw),
}
SIZES = [
    {"examples_per_client": 7},
    {"examples_per_client": "lognormal", "max_examples_per_client": 90},
]


@pytest.mark.parametrize("sizes", SIZES, ids=["fixed", "lognormal"])
@pytest.mark.parametrize("scheme", SCHEMES)
def test_lazy_indices_equal_the_materialised_table(scheme, sizes):
    population = SCHEMES[scheme](num_nodes=50, seed=3, **sizes)
    shards = population.materialise()
    packed = NodeData.from_shards(shards)
    assert torch.equal(population.indices(torch.arange(50)), packed.table)
    assert torch.equal(population.counts.to(torch.int64), packed.counts)
    assert population.width == packed.width
    assert all(np.array_equal(shard, np.sort(shard)) for shard in shards)
    assert all(np.array_equal(population[node], shards[node]) for node in (0, 17, -1))
    assert shards[0].max() < len(LABELS) and shards[0].dtype == np.int64


@pytest.mark.parametrize("scheme", SCHEMES)
def test_local_batches_are_the_same_from_the_population_and_its_table(scheme):
    population = SCHEMES[scheme](
        num_nodes=30, seed=1, examples_per_client="lognormal", max_examples_per_client=120
    )
    packed = NodeData.from_shards(population.materialise())
    cohort = torch.tensor([7, 3, 29, 11])
    for schedule in ({"epochs": 2}, {"steps": torch.tensor([5, 1, 9, 2])}):
        lazy, table = (
            local_batches(data, cohort, seed=4, round_idx=6, batch_size=8, **schedule)
            for data in (population, packed)
        )
        assert torch.equal(lazy.indices, table.indices)
        assert torch.equal(lazy.mask, table.mask)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_a_clients_examples_do_not_depend_on_its_companions_or_their_order(scheme):
    population = SCHEMES[scheme](num_nodes=1000, seed=2, examples_per_client="lognormal")
    alone = population.indices(torch.tensor([500]))[0]
    for cohort in ([900, 500, 2], [500, 999, 0, 1], [3, 2, 1, 500][::-1], [500, 500]):
        rows = population.indices(torch.tensor(cohort))
        assert torch.equal(rows[cohort.index(500)], alone)
    assert not torch.equal(population.indices(torch.tensor([501]))[0], alone)
    reseeded = SCHEMES[scheme](num_nodes=1000, seed=5, examples_per_client="lognormal")
    assert not torch.equal(reseeded.indices(torch.tensor([500]))[0], alone)


def test_sizes_follow_the_setting():
    assert client_sizes(6, 0, 20).tolist() == [20] * 6
    assert client_sizes(6, 0, 20, max_examples_per_client=8).tolist() == [8] * 6
    many = _SIZE_CHUNK + 1000  # drawn in two chunks: the same as one draw (LEAF's rule)
    leaf = rng.generator(9, rng.PARTITION).lognormal(4, 2, many).astype(np.int64) + 50
    sizes = client_sizes(many, 9, "lognormal")
    assert sizes.dtype == np.int32 and np.array_equal(sizes, leaf)
    assert np.array_equal(client_sizes(many, 9, "lognormal", 300), np.minimum(leaf, 300))
    population = population_iid(LABELS, num_nodes=40, seed=9, examples_per_client="lognormal")
    assert [len(shard) for shard in population] == leaf[:40].tolist()
    assert population.width == leaf[:40].max()
    assert population.nbytes == 4 * 40 + 8 * len(LABELS) + 2 * 8 * 10  # sizes, base set


def test_dirichlet_proportions_have_the_dirichlet_mean_and_variance():
    """Dir(alpha p): E q_c = p_c and Var q_c = p_c (1 - p_c) / (alpha + 1)."""
    nodes = torch.arange(20000)
    for alpha in (0.05, 5.0):
        scheme = population_dirichlet(LABELS, num_nodes=20000, seed=0, alpha=alpha).scheme
        proportions = scheme.proportions(0, nodes).numpy()
        np.testing.assert_allclose(proportions.sum(axis=1), 1.0)
        np.testing.assert_allclose(proportions.mean(axis=0), PRIOR, atol=0.006)
        theory = PRIOR * (1 - PRIOR) / (alpha + 1)
        np.testing.assert_allclose(proportions.var(axis=0), theory, rtol=0.06)


def test_small_alpha_gives_few_classes_per_client_and_large_alpha_the_prior():
    def held(alpha):
        population = population_dirichlet(
            LABELS, num_nodes=500, seed=1, alpha=alpha, examples_per_client=40
        )
        return label_histograms(LABELS, population.materialise(), 10)

    few, spread = held(0.01), held(1000.0)
    assert (few > 0).sum(axis=1).mean() < 1.5
    assert (spread > 0).sum(axis=1).mean() > 9  # 40 draws from ~p hit ~9.85 of 10 classes
    np.testing.assert_allclose(spread.sum(axis=0) / spread.sum(), PRIOR, atol=0.01)


@pytest.mark.parametrize("shape", [0.02, 0.3, 1.0, 4.0])
def test_the_gamma_draws_follow_the_gamma_law(shape):
    logs = _log_gamma(11, torch.arange(4000), torch.full((3,), shape, dtype=torch.float64))
    draws = torch.exp(logs).flatten().numpy()
    assert stats.kstest(draws, stats.gamma(shape).cdf).pvalue > 1e-3


@pytest.mark.parametrize("k, size, held", [(3, 20, 3), (1, 5, 1), (10, 30, 10), (4, 2, 2)])
def test_k_classes_per_client_gives_exactly_k_classes_split_evenly(k, size, held):
    population = population_classes(
        LABELS, num_nodes=200, seed=4, classes_per_client=k, examples_per_client=size
    )
    histograms = label_histograms(LABELS, population.materialise(), 10)
    assert (histograms > 0).sum(axis=1).tolist() == [held] * 200
    most, fewest = histograms.max(axis=1), np.where(histograms > 0, histograms, size).min(axis=1)
    assert (most - fewest).max() <= 1
    chosen = (histograms > 0).sum(axis=0)  # every class held by about 200 k / 10 clients
    assert chosen.min() > 0.5 * chosen.mean()


@pytest.mark.parametrize(
    "partition, settings, message",
    [
        (population_iid, {"examples_per_client": 0}, "per_client=0 is not one of: an integer"),
        (population_iid, {"examples_per_client": "zipf"}, "'zipf' is not one of: .*lognormal"),
        (population_iid, {"examples_per_client": True}, "examples_per_client=True is not one"),
        (population_iid, {"max_examples_per_client": 0}, "max_examples_per_client=0 must be"),
        (population_dirichlet, {"alpha": 0.0}, r"partition.alpha=0.0 must be > 0"),
        (population_classes, {"classes_per_client": 11}, "=11 must be .* between 1 and the 10"),
        (population_classes, {"classes_per_client": 0}, "classes_per_client=0 must be an"),
    ],
)  # fmt: skip
def test_bad_settings_give_one_config_error(partition, settings, message):
    with pytest.raises(ConfigError, match=message):
        partition(LABELS, num_nodes=10**9, seed=0, **settings)  # raised before any draw


def test_a_bad_setting_stops_the_build_with_one_line():
    config = compose_config("partition=population_classes", "partition.classes_per_client=12")
    with pytest.raises(ConfigError, match="partition.classes_per_client=12 must be an integer"):
        build_simulation(config)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_a_cohorts_indices_cost_its_size_not_the_populations(scheme):
    """100 clients of 10^6, and of 10^12 (sizes: one number, expanded; an allocation of even
    one byte per client would fail): the same rows for the same clients, by construction."""
    population = SCHEMES[scheme](num_nodes=10**6, seed=0, examples_per_client=20)
    cohort = torch.as_tensor(rng.generator(0, rng.SAMPLING).choice(10**6, 100, replace=False))
    rows = population.indices(cohort)
    assert rows.shape == (100, 20)
    huge = replace(population, counts=population.counts[:1].expand(10**12))
    assert len(huge) == 10**12
    assert torch.equal(huge.indices(cohort), rows)
    far = torch.tensor([10**12 - 1, 5 * 10**11])
    assert huge.indices(far).shape == (2, 20) and len(huge[10**12 - 1]) == 20


def test_the_build_keeps_a_population_as_it_derives_it():
    simulation = build_simulation(
        compose_config("partition=population_dirichlet", "num_nodes=12", "seed=3")
    )
    node_data, nodes = simulation.task.node_data, torch.arange(12)
    assert isinstance(node_data, PopulationData)  # never unpacked into a table
    expected = population_dirichlet(LABELS, num_nodes=12, seed=3).indices(nodes)
    assert torch.equal(node_data.indices(nodes), expected)
    assert simulation.federation.label_histograms is None


def test_a_population_may_outnumber_the_base_sets_examples():
    simulation = build_simulation(compose_config("partition=population_iid", "num_nodes=5000"))
    assert simulation.federation.num_nodes == 5000 > len(simulation.task.dataset.train_y)


@pytest.mark.parametrize(
    "setting, named",
    [("attack=label_flip", "attack=LabelFlip"), ("aggregator=feddisco", "aggregator=FedDisco")],
)
def test_what_reads_every_clients_data_is_refused_for_a_population(setting, named):
    with pytest.raises(ConfigError, match=f"{named} .*population"):
        build_simulation(compose_config("partition=population_iid", "num_nodes=12", setting))


def test_data_moves_to_a_device_whole():
    data = digits()
    for node_data in (
        NodeData.from_shards([np.arange(3), np.arange(3, 8)]),
        population_classes(LABELS, num_nodes=5, seed=0),
    ):
        task = Task(mlp((64,), 10, (8,)), data, node_data, SGD(), seed=0)
        moved = task.to("meta").node_data
        assert type(moved) is type(node_data) and moved.counts.device.type == "meta"
        assert moved.width == node_data.width and moved.nbytes == node_data.nbytes
    population = population_classes(LABELS, num_nodes=5, seed=0).to("meta")
    assert population.scheme.base.by_class.device.type == "meta"


def test_node_data_indices_are_its_table_rows():
    packed = NodeData.from_shards([np.arange(5), np.array([], dtype=np.int64), np.arange(9, 12)])
    # an offset index: 8 examples and a pad, 3 offsets and 3 counts, int64
    assert packed.width == 5 and packed.nbytes == (8 + 1) * 8 + 3 * 8 + 3 * 8
    assert [list(node) for node in packed] == [[0, 1, 2, 3, 4], [], [9, 10, 11]]
    assert packed.indices(torch.tensor([2, 0])).tolist() == [[9, 10, 11, 0, 0], [0, 1, 2, 3, 4]]


def test_a_population_too_large_to_size_is_refused_in_one_line():
    """Its sizes alone (4 bytes per client) would exceed any address space."""
    refused = f"partition=population_iid with num_nodes={10**15} needs"
    with pytest.raises(ConfigError, match=refused):
        build_simulation(compose_config("partition=population_iid", f"num_nodes={10**15}"))
