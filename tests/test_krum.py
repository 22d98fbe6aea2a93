"""Krum keeps the received model nearest its closest others; Multi-Krum averages the m best."""

import numpy as np
import pytest
import torch
from conftest import compose_config
from test_backend_ray import metrics

from fedsim.aggregators.krum import Krum, MultiKrum, krum_scores, squared_distances
from fedsim.build import build_simulation
from fedsim.errors import ConfigError

# Seven models, two Byzantine (both at (10, 10), received first) and five honest near 0.
ROWS = torch.tensor([[[10.0, 10.0], [10.0, 10.0], [1.0, 0.0], [0.0, 2.0], [0.0, 0.0], [-3.0, 0.0],
                      [0.0, -4.0]]])  # fmt: skip
OWN = torch.zeros(1, 2)


def test_krum_scores_by_hand():
    """f=2 of 7: each score sums the 7 - 2 - 2 = 3 smallest squared distances to the others;
    (0, 0) is 1, 4, 9 from (1, 0), (0, 2), (-3, 0): 14.  A Byzantine model's nearest three are
    its twin (0) and (0, 2), (1, 0) at 164 and 181: 345."""
    scores = krum_scores(squared_distances(ROWS), 3)
    assert scores.tolist() == [[345.0, 345.0, 22.0, 22.0, 14.0, 38.0, 58.0]]


def test_krum_keeps_the_honest_model_of_least_score():
    assert Krum(f=2).combine(ROWS, torch.ones(1, 7), OWN).tolist() == [[0.0, 0.0]]


def test_krum_ignores_one_outlier_among_five():
    """f=1 of 5 (5 > 2f + 2): scores over the 2 nearest, (1, 1): 1 + 1, the honest others: 1 + 2."""
    rows = torch.tensor([[[0.0, 1.0], [1e6, 0.0], [1.0, 0.0], [1.0, 1.0], [2.0, 1.0]]])
    weights = torch.tensor([[0.01, 0.96, 0.01, 0.01, 0.01]])  # ignored
    assert Krum(f=1).combine(rows, weights, OWN).tolist() == [[1.0, 1.0]]


def test_equal_scores_go_to_the_model_nearer_all_others_in_any_order():
    """f=0 of 3, one neighbour: 0 and 1 both score 1; 1 is nearer 5 (1 + 16 < 1 + 25)."""
    rows = torch.tensor([[[0.0], [1.0], [5.0]], [[5.0], [1.0], [0.0]]])
    assert Krum(f=0).combine(rows, torch.ones(2, 3), torch.zeros(2, 1)).tolist() == [[1.0], [1.0]]


def test_multi_krum_averages_the_three_best_models():
    """Scores 14, 22, 22: the mean (not the sum) of (0, 0), (1, 0), (0, 2)."""
    combined = MultiKrum(f=2, m=3).combine(ROWS, torch.ones(1, 7), OWN)
    torch.testing.assert_close(combined, torch.tensor([[1 / 3, 2 / 3]]))


def test_multi_krum_keeps_k_minus_f_by_default_and_krum_is_m_one():
    """m=None keeps 7 - 2 = 5: the five honest models, mean (-2/5, -2/5)."""
    combined = MultiKrum(f=2).combine(ROWS, torch.ones(1, 7), OWN)
    torch.testing.assert_close(combined, torch.tensor([[-0.4, -0.4]]))
    assert MultiKrum(f=2, m=1).combine(ROWS, torch.ones(1, 7), OWN).tolist() == [[0.0, 0.0]]


def test_each_target_chooses_among_its_own_rows():
    rows = torch.cat([ROWS, ROWS + 5.0])
    combined = Krum(f=2).combine(rows, torch.ones(2, 7), torch.zeros(2, 2))
    assert combined.tolist() == [[0.0, 0.0], [5.0, 5.0]]


def test_too_few_models_received_is_refused_in_one_line():
    with pytest.raises(ConfigError, match=r"f=2 needs more than 2f \+ 2 = 6 .* received 6"):
        Krum(f=2).combine(ROWS[:, :6], torch.ones(1, 6), OWN)
    Krum(f=2).check_received(7)
    with pytest.raises(ConfigError, match="aggregator.f=1 .* received 4"):
        MultiKrum(f=1).check_received(4)


def test_multi_krum_refuses_more_than_received_minus_f():
    MultiKrum(f=2, m=5).check_received(7)
    with pytest.raises(ConfigError, match="aggregator.m=6 exceeds received - f = 5"):
        MultiKrum(f=2, m=6).check_received(7)


@pytest.mark.parametrize("setting", ["f=-1", "m=0"])
def test_negative_f_or_nonpositive_m_is_refused(setting):
    name, value = setting.split("=")
    with pytest.raises(ConfigError, match=f"aggregator.{setting} must be >= "):
        MultiKrum(**{name: int(value)})


@pytest.mark.parametrize("aggregator", ["krum", "multi_krum"])
@pytest.mark.parametrize(
    "strategy",
    [
        ["strategy=fedavg", "strategy.sample_size=7"],
        ["strategy=dpsgd", "topology=regular", "topology.degree=6"],
    ],
)
def test_krum_runs_two_rounds(aggregator, strategy, tmp_path):
    rows = metrics(tmp_path, "run", f"aggregator={aggregator}", "rounds=2", *strategy)
    assert np.isfinite(rows[rows.metric == "loss"].value).all()


def test_a_run_with_too_few_clients_for_f_stops_in_one_line(tmp_path):
    with pytest.raises(ConfigError, match="aggregator.f=3 needs more than .* received 7"):
        metrics(tmp_path, "run", "aggregator=krum", "aggregator.f=3", "strategy.sample_size=7")


@pytest.mark.parametrize(
    "settings, received",
    [
        (["strategy.sample_size=6", "aggregator.f=2"], 6),  # FedAvg's server gets 6 models
        (["strategy=dpsgd", "topology=regular", "topology.degree=4", "aggregator.f=2"], 5),
    ],
)
def test_too_few_models_per_receiver_are_refused_before_any_work(settings, received):
    config = compose_config("aggregator=krum", "num_nodes=12", *settings)
    with pytest.raises(
        ConfigError, match=f"aggregator.f=2 needs more .* but one received {received}"
    ):
        build_simulation(config)


@pytest.mark.parametrize("aggregator", ["krum", "multi_krum", "bulyan"])
def test_more_attackers_per_receiver_than_f_is_refused_naming_both_settings(aggregator):
    """All 16 clients report to the server: nodes 0-2 attack, which f=2 does not withstand."""
    settings = ["num_nodes=16", "strategy.sample_size=16", f"aggregator={aggregator}",
                "attack=sign_flip", "attack.nodes=[0,1,2]"]  # fmt: skip
    with pytest.raises(
        ConfigError, match=r"attack.nodes=\[0, 1, 2\] puts 3 Byzantine .* aggregator.f=2 "
    ):
        build_simulation(compose_config(*settings, "aggregator.f=2"))
    build_simulation(compose_config(*settings, "aggregator.f=3"))


def test_in_gossip_the_most_attackers_one_honest_node_hears_count():
    """On a complete graph every honest node hears nodes 0 and 2: f=1 is too few, f=2
    enough."""
    settings = ["strategy=dpsgd", "topology=complete", "num_nodes=12", "aggregator=krum",
                "attack=gaussian", "attack.nodes=[0,2]"]  # fmt: skip
    with pytest.raises(ConfigError, match=r"puts 2 Byzantine models .* aggregator.f=1 "):
        build_simulation(compose_config(*settings, "aggregator.f=1"))
    build_simulation(compose_config(*settings, "aggregator.f=2"))
