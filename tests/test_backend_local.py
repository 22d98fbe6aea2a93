import numpy as np
import pytest
import torch
from helpers import path_federation, started_backend, zero_logreg_task
from torch import nn

from fedsim.aggregators.trimmed_mean import TrimmedMean
from fedsim.backends.local import CHUNK_BYTES, LocalBackend, chunk_rows
from fedsim.data.datasets import digits
from fedsim.errors import ConfigError
from fedsim.plans import Gossip, RoundPlan
from fedsim.task import Task
from fedsim.training.loop import LoopTrainer
from fedsim.training.schedule import NodeData
from fedsim.training.sgd import SGD
from fedsim.training.vectorised import VectorisedTrainer


class DataDependent(nn.Module):
    """A model whose forward branches on the data, which vmap cannot trace."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(64, 10)

    def forward(self, x):
        return self.linear(x) if x.sum() > 0 else -self.linear(x)


def task(model):
    shards = [np.arange(5 * i, 5 * i + 5) for i in range(3)]
    return Task(model, digits(), NodeData.from_shards(shards), SGD(batch_size=2), seed=0)


def test_vectorised_trainer_is_chosen_for_matrix_models():
    backend = LocalBackend(vectorise="auto")
    backend.start(task(nn.Sequential(nn.Linear(64, 10))), num_rows=3)
    assert isinstance(backend.trainer, VectorisedTrainer)


def test_a_model_vmap_cannot_run_falls_back_to_the_loop_with_a_warning():
    backend = LocalBackend(vectorise=True)
    with pytest.warns(UserWarning, match="cannot be trained under vmap"):
        backend.start(task(DataDependent()), num_rows=3)
    assert isinstance(backend.trainer, LoopTrainer)


def test_convolutions_on_cpu_use_the_loop_under_auto():
    model = nn.Sequential(
        nn.Unflatten(1, (1, 8, 8)), nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(72, 10)
    )
    backend = LocalBackend(vectorise="auto")
    backend.start(task(model), num_rows=3)
    assert isinstance(backend.trainer, LoopTrainer)
    assert backend.params.shape == (3, sum(p.numel() for p in model.parameters()))
    assert torch.equal(backend.params[0], backend.params[2])


def test_mixing_matrices_of_a_fresh_graph_per_round_do_not_accumulate():
    import networkx as nx

    from fedsim.backends.local import MIXING_CACHE
    from fedsim.plans import Gossip, RoundPlan
    from fedsim.topology import metropolis_hastings

    backend = LocalBackend()
    backend.start(task(nn.Sequential(nn.Linear(64, 10))), num_rows=3)
    for round_idx in range(MIXING_CACHE + 10):
        weights = metropolis_hastings(nx.path_graph(3))  # a new object every round
        backend.execute(RoundPlan((Gossip(weights),)), round_idx)
    assert len(backend._mixing) == MIXING_CACHE


def test_dpsgd_mixing_with_variance_correction_targets_the_in_neighbours_mean_variance():
    from fedsim.aggregators import VarianceCorrected
    from fedsim.plans import Gossip

    task = zero_logreg_task()
    backend = LocalBackend()
    aggregator = VarianceCorrected(tensors="all")
    backend.start(task, 3, aggregator)
    backend.params.copy_(
        torch.tensor([[1.0, 0, 0, 1, 1, 0.5], [0, 2, 1, 0, 0, 2], [3, 0, 0, 1, 3, 1]])
    )
    before = backend.params.clone()
    weights = path_federation(task).topology.mixing(0)  # MH weights of the path 0 - 1 - 2
    backend.execute(RoundPlan((Gossip(weights),)), 0)
    variances = aggregator.variances(before, task.layout)
    targets = [variances[1], (variances[0] + variances[2]) / 2, variances[1]]
    after = aggregator.variances(backend.params, task.layout)
    assert torch.allclose(after, torch.stack(targets), atol=1e-6)


def test_consensus_distance_is_the_mean_squared_distance_to_the_average():
    backend = started_backend(zero_logreg_task(), 3, zero=True)  # 6 parameters per row
    backend.params[1, 0] = 3.0  # rows (0, ...), (3, ...), (0, ...): mean 1 in the first entry
    assert backend.consensus_distance(3) == pytest.approx((1 + 4 + 1) / 3)
    assert backend.consensus_distance(3, nodes=np.array([0, 1])) == pytest.approx(2.25)
    assert backend.node_mean(3, nodes=np.array([1, 2]))[0] == 1.5


def test_equal_models_are_exactly_at_consensus():
    backend = started_backend(zero_logreg_task(), 20)
    row = torch.randn(backend.params.shape[1], generator=torch.Generator().manual_seed(0))
    backend.params[:] = row  # a float32 mean of these 20 rows rounds (6e-14 measured before)
    assert backend.consensus_distance(20) == 0.0


@pytest.mark.parametrize(
    "value, finite", [(float("nan"), False), (float("inf"), False), (-float("inf"), False)]
)
def test_one_non_finite_parameter_makes_the_federation_non_finite(value, finite):
    backend = started_backend(zero_logreg_task(), 3, zero=True)
    assert backend.all_finite()
    backend.params[2, 5] = value
    assert backend.all_finite() is finite


def test_finite_parameters_whose_sum_overflows_are_finite():
    backend = started_backend(zero_logreg_task(), 3, zero=True)
    backend.params[:, 0] = 3e38  # their float32 sum is inf
    assert not torch.isfinite(backend.params.sum()) and backend.all_finite()


def test_a_gossip_of_a_state_mixes_its_rows_by_plain_w_and_leaves_the_models():
    task = zero_logreg_task()
    mixing = path_federation(task).topology.mixing(0)
    backend = started_backend(task, num_rows=3)
    models = backend.params.clone()
    backend.slot("tracker")[:] = torch.tensor([[1.0], [2.0], [4.0]]) * torch.ones(3, 6)
    backend.execute(RoundPlan((Gossip(mixing, payload="tracker"),)), round_idx=0)
    torch.testing.assert_close(backend.slot("tracker")[:, 0], torch.tensor([4 / 3, 7 / 3, 10 / 3]))
    torch.testing.assert_close(backend.params, models)


def test_a_gossip_of_a_state_beside_a_robust_aggregator_is_refused():
    task = zero_logreg_task()
    mixing = path_federation(task).topology.mixing(0)
    backend = LocalBackend()
    backend.start(task, 3, aggregator=TrimmedMean())
    with pytest.raises(
        ConfigError, match="gossip of 'tracker' is mixed by plain W.*aggregator=mean"
    ):
        backend.execute(RoundPlan((Gossip(mixing, payload="tracker"),)), round_idx=0)


def test_gossip_writes_w_x_into_a_spare_buffer_that_trades_places_with_the_models():
    task = zero_logreg_task()
    mixing = path_federation(task).topology.mixing(0)
    backend = started_backend(task, num_rows=3)
    backend.params.copy_(torch.arange(18.0).reshape(3, 6))
    first = backend.params
    expected = torch.as_tensor(mixing.toarray(), dtype=torch.float32) @ first
    backend.execute(RoundPlan((Gossip(mixing),)), round_idx=0)
    torch.testing.assert_close(backend.params, expected)
    second = backend.params
    backend.execute(RoundPlan((Gossip(mixing),)), round_idx=1)
    torch.testing.assert_close(backend.params, torch.as_tensor(mixing.toarray()).float() @ expected)
    # no fresh (rows, d) tensor per round: the two buffers alternate
    assert second is not first and backend.params is first and backend._spare is second


def test_consecutive_nodes_train_in_place_as_nodes_in_any_order_do():
    from fedsim.plans import Train

    def trained(nodes):
        backend = started_backend(task(nn.Sequential(nn.Linear(64, 10))), 3, chunk_size=2)
        backend.execute(RoundPlan((Train(np.array(nodes), steps=2),)), round_idx=0)
        return backend.params

    in_place, gathered = trained([0, 1, 2]), trained([2, 0, 1])
    torch.testing.assert_close(in_place, gathered)  # chunks of other sizes: BLAS may round
    assert not torch.equal(in_place, trained([]))


def test_a_default_chunk_holds_32_mib_of_parameter_rows():
    """backend.chunk_size=null: 872 nodes of the digits MLP (d = 9,610), at least one node."""
    assert CHUNK_BYTES == 32 * 2**20
    assert chunk_rows(None, 9_610) == 872 and 872 * 9_610 * 4 <= CHUNK_BYTES < 873 * 9_610 * 4
    assert chunk_rows(None, 10**9) == 1
    assert chunk_rows(256, 9_610) == 256 and chunk_rows("auto", 9_610) == "auto"


@pytest.mark.parametrize("chunk_size", [0, -3, "all", 2.5])
def test_a_bad_chunk_size_is_refused_naming_the_legal_values(chunk_size):
    with pytest.raises(ConfigError, match="must be an integer >= 1, null or auto"):
        LocalBackend(chunk_size=chunk_size)
