"""FedDisco: discrepancy-aware client weights, by hand, and on the FedAvg family's plans."""

import math
import re
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from conftest import compose_config
from helpers import path_federation, zero_logreg_task

from fedsim.aggregators.feddisco import FedDisco, disco_weights, discrepancies
from fedsim.build import build_simulation
from fedsim.errors import ConfigError
from fedsim.metrics.recorder import Recorder
from fedsim.runner import precheck
from fedsim.strategies import FedAvg
from fedsim.strategies.fednova import FedNova
from fedsim.strategies.fedprox import FedProx
from fedsim.strategies.scaffold import Scaffold
from fedsim.traffic import TrafficCounters

# FedDisco's NIID-2 on FMNIST, scaled down: five clients with two classes each (2i, 2i + 1),
# one with every class, all of the same size.
NIID2 = np.vstack(
    [np.eye(10, dtype=np.int64)[[2 * i, 2 * i + 1]].sum(axis=0) * 50 for i in range(5)]
    + [np.full(10, 10)]
)


def niid2_plan(strategy):
    federation = replace(
        path_federation(zero_logreg_task()),
        num_nodes=6,
        num_examples=NIID2.sum(axis=1),
        label_histograms=NIID2,
    )
    strategy.reweighting = FedDisco()
    return strategy.plan(0, federation), federation


def test_niid2_hand_check_weighs_the_iid_client_0_2424():
    """n_k / N = 1/6 each; KL = log 5 for a two-class client, 0 for the IID one, so
    d = (0.2 x 5, 0) and w~ = (1/6 x 5, 1/6 + 0.1), normalised over 1.1."""
    d = discrepancies(NIID2, "kl")
    np.testing.assert_allclose(d, [0.2] * 5 + [0.0], atol=1e-15)
    weights = disco_weights(NIID2.sum(axis=1), d, a=0.5, b=0.1)
    np.testing.assert_allclose(weights, [1 / 6 / 1.1] * 5 + [(1 / 6 + 0.1) / 1.1], rtol=1e-12)
    assert np.round(weights, 4).tolist() == [0.1515] * 5 + [0.2424]


def test_niid2_weights_are_the_servers_average_in_a_fedavg_plan():
    plan, _ = niid2_plan(FedAvg(sample_size=6))
    upload = plan.steps[-1]
    assert upload.targets.tolist() == [6]
    assert np.round(upload.weights, 4).tolist() == [0.1515] * 5 + [0.2424]


@pytest.mark.parametrize("measure", ["kl", "l2", "l1", "cosine"])
def test_a_and_b_zero_give_fedavg_weights_to_the_bit(measure):
    sizes = np.random.default_rng(0).integers(1, 1000, size=7)
    histograms = np.random.default_rng(1).integers(0, 50, size=(7, 10))
    d = discrepancies(histograms, measure)
    np.testing.assert_array_equal(disco_weights(sizes, d, a=0.0, b=0.0), sizes / sizes.sum())


def test_equal_sizes_and_equal_discrepancies_give_uniform_weights():
    histograms = np.array([[4, 0, 0], [0, 4, 0], [0, 0, 4]])
    d = discrepancies(histograms, "kl")
    np.testing.assert_allclose(d, [1 / 3] * 3)
    np.testing.assert_allclose(disco_weights(np.full(3, 4), d, a=0.5, b=0.1), [1 / 3] * 3)


def test_when_every_adjusted_weight_is_non_positive_fedavg_weights_are_kept():
    sizes = np.array([1, 2, 7])
    d = discrepancies(np.array([[1, 0], [1, 1], [7, 0]]), "l1")
    np.testing.assert_array_equal(disco_weights(sizes, d, a=0.5, b=-1.0), sizes / 10)
    # a client at exactly zero with the others negative is no weight either
    np.testing.assert_array_equal(disco_weights(np.ones(2), np.array([1.0, 3.0]), 0.5, 0.0),
                                  [0.5, 0.5])  # fmt: skip


def test_a_negative_adjusted_weight_is_cut_to_zero():
    """Two IID clients (d = 0) and a one-class client (l1 = 2 (1 - 1/C) = 1 for C = 2)."""
    d = discrepancies(np.array([[5, 5], [5, 5], [10, 0]]), "l1")
    np.testing.assert_allclose(d, [0.0, 0.0, 1.0])
    # w~ = 1/3 + 0.1 (twice), 1/3 - 0.5 + 0.1 < 0
    np.testing.assert_allclose(disco_weights(np.full(3, 10), d, 0.5, 0.1), [0.5, 0.5, 0.0])


# Three clients, four classes: D = (1/2, 1/2, 0, 0), uniform, (1, 0, 0, 0); T = 1/4.
HAND = np.array([[3, 3, 0, 0], [2, 2, 2, 2], [5, 0, 0, 0]])
BY_HAND = {
    "kl": [1 / 3, 0.0, 2 / 3],  # log 2, 0, log 4, over their sum 3 log 2
    "l2": [0.5, 0.0, math.sqrt(3) / 2],  # sqrt(4 / 16); sqrt(9 / 16 + 3 / 16)
    "l1": [1.0, 0.0, 1.5],
    "cosine": [1 - 1 / math.sqrt(2), 0.0, 0.5],  # 1 - (1/4) / (sqrt(1/2) / 2); 1 - (1/4) / (1/2)
}


@pytest.mark.parametrize("measure", sorted(BY_HAND))
def test_each_discrepancy_measure_matches_a_hand_computation(measure):
    np.testing.assert_allclose(discrepancies(HAND, measure), BY_HAND[measure], atol=1e-15)


def test_kl_of_clients_all_uniform_is_zero_not_nan():
    np.testing.assert_array_equal(discrepancies(np.full((3, 4), 5), "kl"), np.zeros(3))


@pytest.mark.parametrize("measure", sorted(BY_HAND))
def test_a_client_without_examples_has_discrepancy_zero(measure):
    found = discrepancies(np.vstack([HAND, np.zeros(4, dtype=np.int64)]), measure)
    assert found[-1] == 0.0
    np.testing.assert_allclose(found[:3], BY_HAND[measure], atol=1e-15)


def test_kl_is_normalised_over_the_clients_averaged_together():
    assert discrepancies(HAND[[0]], "kl").tolist() == [1.0]
    np.testing.assert_allclose(discrepancies(HAND[[0, 2]], "kl"), [1 / 3, 2 / 3])


def test_fedprox_averages_with_the_disco_weights():
    plan, _ = niid2_plan(FedProx(mu=0.1, sample_size=6))
    assert np.round(plan.steps[-1].weights, 4).tolist() == [0.1515] * 5 + [0.2424]


def test_scaffold_weighs_its_models_not_its_control_variates():
    """The official code reweighs SCAFFOLD's model average only; c keeps 1/N per client.
    With SCAFFOLD's uniform weighting p_k = 1/6, the NIID-2 weights are the same."""
    plan, _ = niid2_plan(Scaffold(sample_size=6))
    models, controls = plan.steps[3], plan.steps[4]
    assert np.round(models.weights, 4).tolist() == [0.1515] * 5 + [0.2424]
    np.testing.assert_array_equal(controls.weights, np.full(6, 1 / 6))


def test_fednova_normalises_the_disco_weights_by_local_work():
    """p_i are the disco weights inside FedNova's x - tau_eff sum p_i (x - y_i) / a_i."""
    strategy = FedNova(sample_size=6, local_epochs=None, local_steps=1, local_max=4)
    plan, federation = niid2_plan(strategy)
    weights = disco_weights(NIID2.sum(axis=1), discrepancies(NIID2, "kl"), 0.5, 0.1)
    norms = strategy.step_weights(np.arange(6), 0, federation)
    scaled = float(weights @ norms) * weights / norms
    np.testing.assert_allclose(plan.steps[-1].weights, np.append(scaled, 1 - scaled.sum()))
    assert plan.steps[-1].side_bytes == 4 + 4  # a_i and d_k


@pytest.mark.parametrize("strategy", [FedAvg(sample_size=6), FedProx(sample_size=6)])
def test_each_upload_carries_its_discrepancy_as_one_float32(strategy):
    plain = path_federation(zero_logreg_task())
    plain_plan = FedAvg(sample_size=3).plan(0, plain)
    plan, _ = niid2_plan(strategy)
    counted = []
    for each, rows in ((plain_plan, 4), (plan, 7)):
        counters = TrafficCounters(num_nodes=rows - 1, num_rows=rows, message_bytes=100)
        counters.account(each)
        counted.append(counters.metrics())
    assert "bytes_side_total" not in counted[0]
    assert counted[1]["bytes_side_total"] == 6 * 4
    assert counted[1]["bytes_model_total"] == 2 * 6 * 100  # down and up, as FedAvg's


def run_metrics(tmp_path, name, *overrides):
    config = compose_config(
        "num_nodes=6", "strategy.sample_size=4", "rounds=3", "eval_every=1",
        "partition=two_class_and_iid", *overrides,
    )  # fmt: skip
    recorder = Recorder(tmp_path / f"{name}.parquet")
    build_simulation(config).run(recorder, progress=False)
    recorder.close()
    rows = pd.read_parquet(tmp_path / f"{name}.parquet")
    return rows[rows.metric != "wall_time_s"].reset_index(drop=True)


def test_a_and_b_zero_is_fedavg_bit_for_bit_but_for_the_side_bytes(tmp_path):
    fedavg = run_metrics(tmp_path, "fedavg")
    disco = run_metrics(
        tmp_path, "disco", "aggregator=feddisco", "aggregator.a=0", "aggregator.b=0"
    )
    # what the 4 side bytes of each upload change: the byte totals, and the time to send them
    totals = ["bytes_sent_total", "bytes_sent_max_node", "bytes_control_total",
              "bytes_side_total", "node_bytes_control", "sim_time_s"]  # fmt: skip
    same = [rows[~rows.metric.isin(totals)].reset_index(drop=True) for rows in (fedavg, disco)]
    pd.testing.assert_frame_equal(*same)
    side = disco.query("metric == 'bytes_side_total'").set_index("round").value
    assert side.to_dict() == {r: 4 * 4 * r for r in range(1, 4)}  # 4 uploads of 4 bytes a round
    sent = [rows.query("metric == 'bytes_sent_total'").set_index("round").value
            for rows in (fedavg, disco)]  # fmt: skip
    assert (sent[1] - sent[0]).to_dict() == {0: 0, **side.to_dict()}


def test_default_disco_changes_the_run(tmp_path):
    fedavg = run_metrics(tmp_path, "fedavg")
    disco = run_metrics(tmp_path, "disco", "aggregator=feddisco")
    loss = "metric == 'loss' and round == 3 and node.isna()"
    assert fedavg.query(loss).value.item() != disco.query(loss).value.item()


@pytest.mark.parametrize(
    "override, message",
    [
        ("aggregator.a=-0.5", "aggregator.a=-0.5 must be a finite number >= 0"),
        ("aggregator.a=nan", "aggregator.a=nan must be a finite number"),
        ("aggregator.a=inf", "aggregator.a=inf must be a finite number"),
        ("aggregator.b=nan", "aggregator.b=nan must be a finite number"),
        ("aggregator.b=-inf", "aggregator.b=-inf must be a finite number"),
        ("aggregator.a=abc", "aggregator.a='abc' must be a number"),
        ("aggregator.measure=js", "aggregator.measure=js is not one of: kl, l2, l1, cosine"),
        ("strategy=dpsgd", "sets the client weights of a server's synchronous average"),
        ("strategy=fedbuff", "not strategy=FedBuff"),
    ],
)
def test_bad_settings_are_one_config_error(override, message, tmp_path):
    with pytest.raises(ConfigError, match=re.escape(message)) as raised:
        precheck(["num_nodes=12", "aggregator=feddisco", override, f"hydra.run.dir={tmp_path}"])
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"a": math.nan}, "aggregator.a=nan must be a finite number >= 0"),
        ({"a": math.inf}, "aggregator.a=inf must be a finite number >= 0"),
        ({"b": math.inf}, "aggregator.b=inf must be a finite number"),
    ],
)
def test_the_constructor_refuses_what_the_config_cannot_give(settings, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        FedDisco(**settings)
