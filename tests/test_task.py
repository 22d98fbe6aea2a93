import numpy as np
import torch

from fedsim.data.datasets import digits
from fedsim.models import mlp
from fedsim.task import Task
from fedsim.training.schedule import NodeData
from fedsim.training.sgd import SGD

ALL_FOUR = np.arange(4)  # the global rows whose initial models are asked for


def make_task(init, scheme="default", seed=0):
    data = digits()
    shards = [np.arange(10 * i, 10 * i + 10) for i in range(4)]
    return Task(mlp((64,), 10, (8,)), data, NodeData.from_shards(shards), SGD(), seed, init, scheme)


def test_same_init_gives_every_row_one_seeded_model():
    rows = make_task("same").initial_models(ALL_FOUR)
    assert all(torch.equal(rows[0], row) for row in rows)
    assert torch.equal(rows, make_task("same").initial_models(ALL_FOUR))
    assert not torch.equal(rows, make_task("same", seed=1).initial_models(ALL_FOUR))


def test_independent_init_gives_each_row_its_own_seeded_model():
    rows = make_task("independent", "xavier").initial_models(ALL_FOUR)
    assert len({tuple(row[:5].tolist()) for row in rows}) == 4
    assert torch.equal(rows, make_task("independent", "xavier").initial_models(ALL_FOUR))
    # Row k's model does not depend on how many rows there are.
    assert torch.equal(rows[:2], make_task("independent", "xavier").initial_models(np.arange(2)))


def test_init_schemes_differ():
    default, xavier = (
        make_task("same").initial_models(np.arange(1)),
        make_task("same", "xavier").initial_models(np.arange(1)),
    )
    assert not torch.equal(default, xavier)
