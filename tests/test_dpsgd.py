import math

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
    zero_logreg_task,
)

from fedsim.errors import ConfigError
from fedsim.plans import Aggregate, Gossip, RoundPlan, Train
from fedsim.runner import run_job
from fedsim.strategies import DPSGD, Federation
from fedsim.topology import Topology, metropolis_hastings

W = torch.tensor([[2 / 3, 1 / 3, 0], [1 / 3, 1 / 3, 1 / 3], [0, 1 / 3, 2 / 3]])


def test_plan_trains_everyone_then_gossips():
    task = zero_logreg_task()
    federation = path_federation(task)
    train, gossip = DPSGD().plan(0, federation).steps
    assert (
        isinstance(train, Train) and train.nodes.tolist() == [0, 1, 2] and not train.fresh_optimizer
    )
    assert isinstance(gossip, Gossip) and gossip.weights is federation.topology.mixing(0)


def test_gossip_step_is_exactly_w_times_x():
    task = zero_logreg_task()
    backend = started_backend(task, num_rows=3)
    backend.params[:] = torch.tensor([[1.0], [2.0], [4.0]]) * torch.ones(3, 6)
    backend.execute(RoundPlan((Gossip(path_federation(task).topology.mixing(0)),)), round_idx=0)
    torch.testing.assert_close(backend.params[:, 0], torch.tensor([4 / 3, 7 / 3, 10 / 3]))


def test_one_round_by_hand():
    task = zero_logreg_task(lr=0.5)
    federation = path_federation(task)
    backend = started_backend(task, num_rows=3, zero=True)
    backend.execute(DPSGD(local_epochs=1).plan(0, federation), round_idx=0)
    trained = torch.stack([-0.5 * hand_gradient(TRAIN_X[i], int(TRAIN_Y[i])) for i in (0, 1, 2)])
    torch.testing.assert_close(backend.params, W @ trained)


def test_disconnected_graph_is_rejected():
    topology = Topology(nx.Graph([(0, 1), (2, 3)]), metropolis_hastings)
    federation = Federation(4, 0, topology, np.ones(4))
    with pytest.raises(
        ConfigError, match="strategy=dpsgd needs a connected topology.*2 components"
    ):
        DPSGD().validate(federation)


def bias_gradient(bias: float, x: torch.Tensor, label: int) -> torch.Tensor:
    """The cross-entropy gradient of a model whose weights are zero and whose class-0 bias is
    ``bias`` (class 1's zero): p = (sigmoid(bias), 1 - sigmoid(bias)); at bias 0 the
    ``hand_gradient``."""
    p = torch.sigmoid(torch.tensor(bias))
    error = torch.stack([p, 1 - p]) - torch.nn.functional.one_hot(torch.tensor(label), 2)
    return torch.cat([torch.outer(error, x).flatten(), error])


# Class-0 biases of the three nodes: class probabilities (3/4, 1/4), (1/2, 1/2), (1/4, 3/4).
BIASES = [math.log(3), 0.0, -math.log(3)]


def one_round_from_biases(plan: RoundPlan) -> torch.Tensor:
    """The models after ``plan`` from the biases above (lr 0.5, one full-batch step)."""
    backend = started_backend(zero_logreg_task(lr=0.5), num_rows=3, zero=True)
    backend.params[:, 4] = torch.tensor(BIASES)
    backend.execute(plan, round_idx=0)
    return backend.params


def test_the_two_orders_by_hand():
    federation = path_federation(zero_logreg_task())
    start = torch.zeros(3, 6)
    start[:, 4] = torch.tensor(BIASES)
    grads = torch.stack(
        [bias_gradient(BIASES[i], TRAIN_X[i], int(TRAIN_Y[i])) for i in (0, 1, 2)]
    )  # node 2's two examples are the same
    torch.testing.assert_close(grads[1], hand_gradient(TRAIN_X[1], int(TRAIN_Y[1])))
    adapted_first = one_round_from_biases(DPSGD().plan(0, federation))
    combined_first = one_round_from_biases(DPSGD(order="combine_then_adapt").plan(0, federation))
    torch.testing.assert_close(adapted_first, W @ (start - 0.5 * grads))
    torch.testing.assert_close(combined_first, W @ start - 0.5 * grads)
    assert not torch.allclose(adapted_first, combined_first, atol=1e-2)
    # Mixing and then training takes the gradient at W X, not at X: another algorithm.
    train, mixing = DPSGD().plan(0, federation).steps
    mixed_first = one_round_from_biases(RoundPlan((mixing, train)))
    assert not torch.allclose(mixed_first, combined_first, atol=1e-2)


def test_combine_then_adapt_sends_the_models_from_before_training():
    task = zero_logreg_task()
    federation = path_federation(task)
    train, restart, mixing, adapt = DPSGD(order="combine_then_adapt").plan(0, federation).steps
    assert isinstance(train, Train) and train.slot_names() == {"start", "update"}
    assert isinstance(mixing, Gossip) and mixing.weights is federation.topology.mixing(0)
    for step in (restart, adapt):  # nothing travels but the gossip, and nobody else combines
        assert isinstance(step, Aggregate) and len(step.messages(3).senders) == 0
        assert len(step.messages(3).combiners) == 0
    assert [group.payload for group in restart.groups] == ["start"] * 3
    assert [group.payload for group in adapt.groups] == ["update"] * 3


def test_combine_then_adapt_with_several_local_steps_adds_the_whole_update():
    task = zero_logreg_task(lr=0.5)
    federation = path_federation(task)
    backend = started_backend(task, num_rows=3, zero=True)
    backend.params[:] = torch.tensor([[1.0], [2.0], [4.0]]) * torch.ones(3, 6)
    start = backend.params.clone()
    local = started_backend(task, num_rows=3)
    local.params[:] = start
    only_training = DPSGD(local_epochs=3).plan(0, federation).steps[:1]
    local.execute(RoundPlan(only_training), round_idx=0)
    backend.execute(DPSGD(local_epochs=3, order="combine_then_adapt").plan(0, federation), 0)
    torch.testing.assert_close(backend.params, W @ start + (local.params - start))


def test_an_unknown_order_is_named():
    with pytest.raises(ConfigError, match="strategy.order=diffusion is not one of"):
        DPSGD(order="diffusion")


@pytest.mark.slow
def test_combine_then_adapt_gives_the_same_metrics_on_ray_and_local(tmp_path, local_ray):
    settings = (
        "num_nodes=12", "rounds=4", "eval_every=2", "strategy=dpsgd", "topology=regular",
        "strategy.order=combine_then_adapt", "aggregator=variance_corrected", "init=independent",
    )  # fmt: skip
    found = []
    for name, backend in (("local", []), ("ray", ["backend=ray", "backend.num_actors=2"])):
        (tmp_path / name).mkdir()
        assert (
            run_job(compose_config(*settings, *backend), tmp_path / name)["status"] == "completed"
        )
        rows = pd.read_parquet(tmp_path / name / "metrics.parquet")
        rows = rows[~rows.metric.isin(["wall_time_s", "bytes_between_actors_total"])]
        found.append(rows.sort_values(["round", "metric", "node"]).reset_index(drop=True))
    local, on_ray = found
    pd.testing.assert_frame_equal(local.drop(columns="value"), on_ray.drop(columns="value"))
    assert np.allclose(local.value, on_ray.value, rtol=1e-4, atol=1e-5)
