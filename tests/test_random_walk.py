import networkx as nx
import numpy as np
import pandas as pd
import pytest
import torch
from conftest import compose_config
from helpers import (
    TRAIN_X,
    TRAIN_Y,
    hand_gradient,
    path_federation,
    started_backend,
    whole_and_resumed,
    zero_logreg_task,
)

from fedsim.build import build_simulation
from fedsim.errors import ConfigError
from fedsim.plans import Average, Train
from fedsim.strategies.base import Federation
from fedsim.strategies.random_walk import (
    RandomWalk,
    metropolis_hastings_walk,
    pick,
    self_repellent_kernel,
    simple_walk,
    visit_measure,
)
from fedsim.topology import Topology, metropolis_hastings

# K4 on nodes 0-3 with the tail 3 - 4 - 5 - 6: degrees 3, 3, 3, 4, 2, 2, 1.
LOLLIPOP = nx.lollipop_graph(4, 3)


def federation_on(graph: nx.Graph, seed: int = 0) -> Federation:
    num_nodes = graph.number_of_nodes()
    return Federation(num_nodes, seed, Topology(graph, metropolis_hastings), np.ones(num_nodes))


def walk(strategy: RandomWalk, federation: Federation, rounds: int) -> list[int]:
    """The holders X_0 .. X_rounds of ``rounds`` planned rounds."""
    holders = [strategy.global_model_row(federation.num_nodes)]
    for round_idx in range(rounds):
        strategy.plan(round_idx, federation)
        holders.append(strategy.global_model_row(federation.num_nodes))
    return holders


def test_the_base_kernels_by_hand():
    simple, degree_share = simple_walk(nx.path_graph(3))
    np.testing.assert_array_equal(simple.toarray(), [[0, 1, 0], [1 / 2, 0, 1 / 2], [0, 1, 0]])
    np.testing.assert_array_equal(degree_share, [1 / 4, 1 / 2, 1 / 4])
    chain, uniform = metropolis_hastings_walk(nx.star_graph(3))  # centre 0, degree 3
    third = 1 / 3
    expected = [[0, third, third, third], [third, 2 * third, 0, 0]]
    np.testing.assert_allclose(chain.toarray()[:2], expected)
    np.testing.assert_array_equal(uniform, [1 / 4] * 4)
    assert chain.nnz == 3 + 2 * 3  # the centre never stays: no zero diagonal entry kept


def test_the_self_repellent_kernel_by_hand():
    """Path 0 - 1 - 2, Metropolis-Hastings P = [[1/2, 1/2, 0], [1/2, 0, 1/2], [0, 1/2, 1/2]],
    mu = 1/3 each, x = (1/2, 1/3, 1/6): x/mu = (3/2, 1, 1/2)."""
    chain, uniform = metropolis_hastings_walk(nx.path_graph(3))
    visits = np.array([1 / 2, 1 / 3, 1 / 6])
    # alpha = 1: (x/mu)^-1 = (2/3, 1, 2); row 0: (1/3, 1/2) / (5/6); row 1: (1/3, 1) / (4/3).
    once = [[2 / 5, 3 / 5, 0], [1 / 4, 0, 3 / 4], [0, 1 / 3, 2 / 3]]
    # alpha = 2: (4/9, 1, 4); row 0: (2/9, 1/2) / (13/18); row 1: (2/9, 2) / (20/9).
    twice = [[4 / 13, 9 / 13, 0], [1 / 10, 0, 9 / 10], [0, 1 / 5, 4 / 5]]
    for alpha, expected in ((1.0, once), (2.0, twice), (0.0, chain.toarray())):
        kernel = self_repellent_kernel(chain, visits, uniform, alpha)
        np.testing.assert_allclose(kernel.toarray(), expected, rtol=1e-12)


def test_the_visit_measure_counts_mu_as_the_first_visit():
    """Three visits (two to node 0, one to node 2) and mu = 1/3 each: x = (7, 1, 4) / 12."""
    x = visit_measure(np.array([2, 0, 1]), np.full(3, 1 / 3))
    np.testing.assert_allclose(x, np.array([7, 1, 4]) / 12, rtol=1e-12)


def test_a_draw_is_the_inverse_cdf_and_never_a_zero_weight():
    weights = np.array([1.0, 0.0, 3.0])  # cumulative 1, 1, 4
    assert [pick(weights, draw) for draw in (0.0, 0.2, 0.2499, 0.25, 0.9)] == [0, 0, 0, 2, 2]
    assert pick(weights, np.nextafter(1.0, 0.0)) == 2
    assert pick(np.array([1.0, 1.0, 0.0]), np.nextafter(1.0, 0.0)) == 1


def test_the_token_moves_along_edges_one_message_from_holder_to_next():
    graph = nx.path_graph(5)
    federation = federation_on(graph, seed=3)
    strategy = RandomWalk(local_steps=2)
    holder = 0
    for round_idx in range(40):
        steps = strategy.plan(round_idx, federation).steps
        successor = strategy.global_model_row(5)
        assert graph.has_edge(holder, successor)  # the simple walk never stays
        train, send = steps
        assert isinstance(train, Train) and train.nodes.tolist() == [holder]
        assert train.steps == 2 and train.epochs is None
        assert isinstance(send, Average) and train.fresh_optimizer
        messages = send.messages(5)
        assert messages.senders.tolist() == [holder] and messages.receivers.tolist() == [successor]
        assert messages.link == "d2d" and len(messages.combiners) == 0  # a copy, not an average
        holder = successor


def test_a_walk_that_stays_sends_nothing():
    federation = federation_on(LOLLIPOP, seed=1)
    strategy = RandomWalk(walk="metropolis_hastings", start_node=6)
    stayed = 0
    for round_idx in range(60):
        holder = strategy.global_model_row(7)
        steps = strategy.plan(round_idx, federation).steps
        if strategy.global_model_row(7) == holder:
            stayed += 1
            assert len(steps) == 1 and isinstance(steps[0], Train)
    assert stayed > 0  # node 6 stays with probability 1/2, node 4 with 1/4


def test_one_round_by_hand():
    """Node 0 takes one full-batch step from zero (lr 0.5), and its only neighbour 1 gets
    the trained model, which is then the one evaluated; node 2 is untouched."""
    task = zero_logreg_task(lr=0.5)
    federation = path_federation(task)
    backend = started_backend(task, num_rows=3, zero=True)
    strategy = RandomWalk()
    assert strategy.global_model_row(3) == 0
    backend.execute(strategy.plan(0, federation), round_idx=0)
    trained = -0.5 * hand_gradient(TRAIN_X[0], int(TRAIN_Y[0]))
    torch.testing.assert_close(backend.params, torch.stack([trained, trained, torch.zeros(6)]))
    assert strategy.global_model_row(3) == 1


def test_srrw_with_alpha_zero_draws_the_base_chains_walk():
    federation = federation_on(LOLLIPOP, seed=5)
    base = walk(RandomWalk(walk="metropolis_hastings"), federation, 300)
    assert walk(RandomWalk(walk="srrw", alpha=0.0), federation, 300) == base
    assert walk(RandomWalk(walk="srrw", alpha=5.0), federation, 300) != base


def test_the_walk_is_a_function_of_the_seed():
    first, second = (walk(RandomWalk(), federation_on(LOLLIPOP, seed=2), 50) for _ in range(2))
    assert first == second
    assert walk(RandomWalk(), federation_on(LOLLIPOP, seed=3), 50) != first


def mean_distance(alpha: float, steps: int = 100, seeds: int = 10) -> float:
    """The visit frequencies' mean total variation distance from uniform after ``steps``."""
    found = []
    for seed in range(seeds):
        strategy = RandomWalk(walk="srrw", alpha=alpha)
        walk(strategy, federation_on(LOLLIPOP, seed), steps)
        found.append(strategy.counters()["walk_tv_distance"])
    return float(np.mean(found))


def test_visits_approach_uniform_faster_as_alpha_grows():
    """Doshi et al.: stronger repellence, smaller sampling variance (measured: about 0.17,
    0.075, 0.038, 0.025 for alpha 0, 1, 5, 10)."""
    distances = [mean_distance(alpha) for alpha in (0.0, 1.0, 5.0, 10.0)]
    assert all(later < earlier for earlier, later in zip(distances, distances[1:], strict=False))
    assert distances[-1] < distances[0] / 3


def test_visit_counts_and_their_distance_by_hand():
    strategy = RandomWalk()
    assert strategy.counters() == {} and strategy.state() == {}
    holders = walk(strategy, path_federation(zero_logreg_task()), 4)
    visits = np.bincount(holders[1:], minlength=3)
    np.testing.assert_array_equal(strategy.state()["visits"], visits)
    distance = 0.5 * np.abs(visits / 4 - [1 / 4, 1 / 2, 1 / 4]).sum()  # simple: mu ~ degree
    assert strategy.counters() == {"walk_tv_distance": pytest.approx(distance)}
    assert holders[1] == 1 and holders[3] == 1  # from an end, then from the middle, back


def test_a_resumed_run_equals_an_uninterrupted_one(tmp_path):
    config = compose_config(
        "num_nodes=12", "rounds=6", "eval_every=1", "checkpoint_every=2", "strategy=random_walk",
        "strategy.walk=srrw", "strategy.alpha=5", "topology=barabasi_albert", "init=independent",
    )  # fmt: skip
    whole, again = whole_and_resumed(config, tmp_path, killed_after=2)
    pd.testing.assert_frame_equal(whole, again)
    distances = whole.query("metric == 'walk_tv_distance'").value
    assert len(distances) == 6 and distances.between(0, 1).all()
    sent = whole.query("metric == 'bytes_d2d_total'").value.diff().dropna()
    message = build_simulation(config).federation.message_bytes
    assert set(sent) <= {0, message}  # one model per hop, none when the walk stays


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"walk": "levy"}, "strategy.walk=levy is not one of: simple, metropolis_hastings, srrw"),
        ({"walk": "srrw", "alpha": -1.0}, r"strategy.alpha=-1.0 must be a finite number >= 0"),
        ({"walk": "srrw", "alpha": float("inf")}, "strategy.alpha=inf must be a finite"),
        ({"alpha": 2.0}, "strategy.alpha=2.0 repels only walk=srrw, not walk=simple"),
        ({"start_node": -1}, "strategy.start_node=-1 must be an integer >= 0"),
        ({"local_steps": 0}, "strategy.local_steps=0 must be an integer >= 1"),
        ({"local_epochs": 1}, "set exactly one of them"),
    ],
)
def test_bad_settings_are_named_in_one_line(settings, message):
    with pytest.raises(ConfigError, match=message) as error:
        RandomWalk(**settings)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["strategy.start_node=12"], "strategy.start_node=12 must lie in 0..11"),
        (["num_nodes=1"], "strategy=random_walk needs num_nodes >= 2, got 1"),
        (["topology=random_regular_per_round"], "needs a static topology, but topology=random_"),
        (["topology=components"], "strategy=random_walk needs a connected topology"),
    ],
)
def test_impossible_federations_are_refused_in_one_line(overrides, message):
    config = compose_config("num_nodes=12", "strategy=random_walk", *overrides)
    with pytest.raises(ConfigError, match=message) as error:
        build_simulation(config)
    assert "\n" not in str(error.value)


def test_a_directed_graph_is_refused_in_one_line():
    federation = federation_on(nx.cycle_graph(4, create_using=nx.DiGraph))
    with pytest.raises(ConfigError, match="needs an undirected topology, but topology is directed"):
        RandomWalk().validate(federation)
