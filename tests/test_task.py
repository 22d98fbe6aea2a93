import numpy as np
import torch

from fedsim.data.datasets import digits
from fedsim.models import mlp
from fedsim.task import Task
from fedsim.training.schedule import NodeData
from fedsim.training.sgd import SGD


def make_task(init, scheme="default", seed=0):
    data = digits()
    shards = [np.arange(10 * i, 10 * i + 10) for i in range(4)]
    return Task(mlp((64,), 10, (8,)), data, NodeData.from_shards(shards), SGD(), seed, init, scheme)


def test_same_init_gives_every_row_one_seeded_model():
    rows = make_task("same").initial_rows(4)
    assert all(torch.equal(rows[0], row) for row in rows)
    assert torch.equal(rows, make_task("same").initial_rows(4))
    assert not torch.equal(rows, make_task("same", seed=1).initial_rows(4))


def test_independent_init_gives_each_row_its_own_seeded_model():
    rows = make_task("independent", "xavier").initial_rows(4)
    assert len({tuple(row[:5].tolist()) for row in rows}) == 4
    assert torch.equal(rows, make_task("independent", "xavier").initial_rows(4))
    # Row k's model does not depend on how many rows there are.
    assert torch.equal(rows[:2], make_task("independent", "xavier").initial_rows(2))


def test_init_schemes_differ():
    default, xavier = make_task("same").initial_rows(1), make_task("same", "xavier").initial_rows(1)
    assert not torch.equal(default, xavier)
