import numpy as np
import pytest
import torch

from fedsim.training.schedule import NodeData, local_batches, samples_in_steps

SHARDS = [np.arange(5), np.arange(10, 13), np.array([], dtype=np.int64), np.arange(20, 40)]


@pytest.fixture
def data():
    return NodeData.from_shards(SHARDS)


def test_each_epoch_visits_every_example_once_in_batches(data):
    batches = local_batches(data, torch.tensor([0]), seed=0, round_idx=0, batch_size=2, epochs=2)
    # 5 examples, batch 2: batches of 2, 2, 1 per epoch, for two epochs.
    assert batches.mask[0].sum(dim=1).tolist() == [2, 2, 1, 2, 2, 1]
    for epoch in range(2):
        steps = slice(3 * epoch, 3 * epoch + 3)
        seen = batches.indices[0, steps][batches.mask[0, steps] > 0]
        assert sorted(seen.tolist()) == [0, 1, 2, 3, 4]


def test_nodes_take_their_own_number_of_steps(data):
    batches = local_batches(
        data, torch.tensor([0, 1, 2, 3]), seed=0, round_idx=0, batch_size=4, epochs=1
    )
    assert batches.active.sum(dim=1).tolist() == [2, 1, 0, 5]
    assert batches.mask.sum(dim=(1, 2)).tolist() == [5, 3, 0, 20]


def test_fixed_steps_cycle_through_epochs(data):
    batches = local_batches(data, torch.tensor([1]), seed=0, round_idx=0, batch_size=2, steps=3)
    assert batches.mask[0].sum(dim=1).tolist() == [2, 1, 2]
    first_epoch = batches.indices[0, :2][batches.mask[0, :2] > 0]
    assert sorted(first_epoch.tolist()) == [10, 11, 12]


def test_a_nodes_batches_do_not_depend_on_its_companions(data):
    alone = local_batches(data, torch.tensor([3]), seed=4, round_idx=2, batch_size=3, epochs=2)
    together = local_batches(
        data, torch.tensor([0, 3, 1]), seed=4, round_idx=2, batch_size=3, epochs=2
    )
    assert torch.equal(together.indices[1, : alone.num_steps], alone.indices[0])
    assert torch.equal(together.mask[1, : alone.num_steps], alone.mask[0])


def test_shuffles_differ_between_rounds(data):
    first = local_batches(data, torch.tensor([3]), seed=0, round_idx=0, batch_size=20, epochs=1)
    second = local_batches(data, torch.tensor([3]), seed=0, round_idx=1, batch_size=20, epochs=1)
    assert not torch.equal(first.indices, second.indices)
    assert sorted(first.indices.flatten().tolist()) == sorted(second.indices.flatten().tolist())


def test_real_examples_fill_a_prefix_of_each_batch(data):
    batches = local_batches(data, torch.arange(4), seed=0, round_idx=0, batch_size=3, epochs=2)
    counts = batches.mask.sum(dim=-1, keepdim=True)
    slots = torch.arange(3)
    assert torch.equal(batches.mask, (slots < counts).float())


def test_samples_in_steps_counts_the_examples_the_batches_hold():
    data = NodeData.from_shards([np.arange(10), np.arange(10, 30), np.arange(30, 33)])
    batches = local_batches(
        data, torch.arange(3), seed=0, round_idx=0, batch_size=8, epochs=None, steps=3
    )
    held = batches.mask.sum(dim=(1, 2)).tolist()  # 8 + 2 + 8, 8 + 8 + 4, 3 + 3 + 3
    assert held == [18, 20, 9]
    assert samples_in_steps(np.array([10, 20, 3]), 3, 8).tolist() == held
