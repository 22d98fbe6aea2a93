"""Variance-corrected averaging: the vanishing variance, its correction, and its edge cases."""

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import compose_config

from fedsim.aggregators import Mean, VarianceCorrected
from fedsim.build import build_simulation
from fedsim.errors import ConfigError
from fedsim.metrics.recorder import Recorder
from fedsim.models import lenet5
from fedsim.models.init import initialize
from fedsim.training.layout import ParameterLayout


def lenets(count: int) -> tuple[torch.Tensor, ParameterLayout]:
    """``count`` independently Xavier-initialised LeNet-5s as rows."""
    model = lenet5((1, 28, 28), 10)
    layout = ParameterLayout.of(model)
    rows = []
    for seed in range(count):
        initialize(model, "xavier", torch.Generator().manual_seed(seed))
        rows.append(layout.flatten(model))
    return torch.stack(rows), layout


def test_merging_with_8_independent_models_shrinks_variance_and_the_correction_restores_it():
    rows, layout = lenets(9)
    own, received = rows[:1], rows[1:]
    merged = 0.5 * own + 0.5 * received.mean(dim=0, keepdim=True)  # beta = 0.5, N = 8
    aggregator = VarianceCorrected()
    target = aggregator.variances(received, layout).mean(dim=0, keepdim=True)
    before = aggregator.variances(merged, layout) / target
    # Theory: beta^2 + (1 - beta)^2 / N = 0.25 + 0.25 / 8 = 0.28125 for every weight tensor
    # (the first convolution has only 150 weights, hence the wider band per tensor).
    assert abs(before.mean().item() - 0.28125) < 0.02
    assert torch.allclose(before, torch.full_like(before, 0.28125), atol=0.03)
    corrected, factors = aggregator.finish(merged, target, layout)
    after = aggregator.variances(corrected, layout) / target
    assert torch.allclose(after, torch.ones_like(after), atol=1e-5)
    assert torch.allclose(factors, torch.full_like(factors, 0.28125**-0.5), atol=0.07)
    for _, columns in aggregator.tensors(layout):
        assert torch.allclose(corrected[:, columns].mean(), merged[:, columns].mean(), atol=1e-7)


def test_the_plain_mean_of_n_independent_models_has_a_variance_of_sigma_squared_over_n():
    rows, layout = lenets(16)
    aggregator = VarianceCorrected()
    ratio = aggregator.variances(rows.mean(dim=0, keepdim=True), layout) / aggregator.variances(
        rows, layout
    ).mean(dim=0)
    assert torch.allclose(ratio, torch.full_like(ratio, 1 / 16), rtol=0.2)


def test_the_correction_is_the_identity_when_all_inputs_are_equal():
    rows, layout = lenets(1)
    aggregator = VarianceCorrected()
    merged = 0.5 * rows + 0.5 * torch.cat([rows] * 8).mean(dim=0, keepdim=True)
    corrected, factors = aggregator.finish(merged, aggregator.variances(rows, layout), layout)
    assert torch.allclose(factors, torch.ones_like(factors), atol=1e-6)
    assert torch.allclose(corrected, merged, atol=1e-7)


def test_zero_variance_tensors_stay_finite_and_unchanged():
    rows, layout = lenets(1)
    zero = torch.zeros_like(rows)
    aggregator = VarianceCorrected(tensors="all")
    corrected, factors = aggregator.finish(zero, aggregator.variances(rows, layout), layout)
    assert torch.isfinite(corrected).all() and torch.equal(corrected, zero)
    assert torch.equal(factors, torch.ones_like(factors))


def test_weights_only_skips_biases_and_all_takes_every_tensor_of_more_than_one_element():
    _, layout = lenets(1)
    weights = [name for name, _ in VarianceCorrected().tensors(layout)]
    every = [name for name, _ in VarianceCorrected(tensors="all").tensors(layout)]
    assert weights and all(name.endswith("weight") for name in weights)
    assert len(every) == len(layout.names) > len(weights)


def test_epsilon_and_the_unbiased_estimator_follow_dfl_torch():
    rows = torch.tensor([[1.0, 3.0]])
    layout = ParameterLayout(("w",), ((1, 2),))
    torch_style = VarianceCorrected(epsilon=1e-4, unbiased=True)
    assert torch_style.variances(rows, layout).item() == pytest.approx(2.0)  # population: 1.0
    _, factors = torch_style.finish(rows, torch.tensor([[8.0]]), layout)
    assert factors.item() == pytest.approx(((8 + 1e-4) / (2 + 1e-4)) ** 0.5)


def test_the_mean_aggregator_changes_nothing():
    rows, layout = lenets(2)
    merged, factors = Mean().finish(rows, rows.new_zeros(2, 0), layout)
    assert torch.equal(merged, rows) and factors.shape == (2, 0)


@pytest.mark.parametrize(
    "setting", [{"tensors": "biases"}, {"epsilon": -1.0}, {"apply_to": "server"}]
)
def test_bad_settings_name_themselves(setting):
    with pytest.raises(ConfigError, match=f"aggregator.{next(iter(setting))}"):
        VarianceCorrected(**setting)


def test_variances_are_per_tensor_over_all_elements():
    rows = torch.tensor([[0.0, 2.0, 5.0, 5.0, 5.0, 9.0]])
    layout = ParameterLayout(("a", "b"), ((1, 2), (2, 2)))
    variances = VarianceCorrected().variances(rows, layout)
    assert np.allclose(variances.numpy(), [[1.0, np.var([5.0, 5.0, 5.0, 9.0])]])


def fedavg_metrics(tmp_path, name, *settings):
    config = compose_config(
        "num_nodes=8", "rounds=2", "eval_every=1", "strategy.sample_size=4",
        "init=independent", *settings,
    )  # fmt: skip
    build_simulation(config).run(Recorder(tmp_path / f"{name}.parquet"), progress=False)
    rows = pd.read_parquet(tmp_path / f"{name}.parquet")
    rows = rows[rows.node.isna() & (rows.metric != "wall_time_s")]
    return rows.set_index(["round", "metric"]).value


def test_a_server_average_is_corrected_only_with_apply_to_all(tmp_path):
    """The paper corrects gossip merges; FedAvg's server average is the plain mean unless
    ``apply_to=all``."""
    mean = fedavg_metrics(tmp_path, "mean")
    gossip_only = fedavg_metrics(tmp_path, "gossip", "aggregator=variance_corrected")
    everywhere = fedavg_metrics(
        tmp_path, "all", "aggregator=variance_corrected", "aggregator.apply_to=all"
    )
    pd.testing.assert_series_equal(gossip_only, mean)
    factors = everywhere[everywhere.index.get_level_values("metric").str.startswith("correction")]
    assert len(factors) and (factors != 1).any()


def test_the_scope_is_per_link():
    assert VarianceCorrected().corrects_on("d2d") and not VarianceCorrected().corrects_on("uplink")
    assert VarianceCorrected(apply_to="all").corrects_on("uplink")
    assert not Mean().corrects_on("d2d")
