"""The vectorised trainer equals the plain per-node torch.optim.SGD loop."""

import numpy as np
import pytest
import torch

from fedsim.models import logreg, mlp
from fedsim.training.layout import ParameterLayout
from fedsim.training.loop import LoopTrainer
from fedsim.training.schedule import NodeData, local_batches
from fedsim.training.sgd import SGD
from fedsim.training.vectorised import VectorisedTrainer


def federation(model, num_nodes=5, seed=0):
    """Nodes with distinct starting models and unequal amounts of data."""
    generator = torch.Generator().manual_seed(seed)
    train_x = torch.rand(60, 8, generator=generator)
    train_y = torch.randint(0, 3, (60,), generator=generator)
    shards = [
        np.arange(0, 7),
        np.arange(7, 10),
        np.arange(10, 30),
        np.arange(30, 31),
        np.arange(31, 60),
    ]
    layout = ParameterLayout.of(model)
    params = layout.flatten(model) + 0.1 * torch.randn(num_nodes, layout.size, generator=generator)
    return layout, params, NodeData.from_shards(shards[:num_nodes]), train_x, train_y


def state(momentum):
    """SGD's optimizer state holding ``momentum`` (none without)."""
    return None if momentum is None else {"momentum": momentum}


@pytest.mark.parametrize("make_model", [lambda: mlp((8,), 3, (16, 8)), lambda: logreg((8,), 3)])
@pytest.mark.parametrize(
    "optimizer, work",
    [
        (SGD(lr=0.1, batch_size=4), {"epochs": 2}),
        (SGD(lr=0.05, momentum=0.9, weight_decay=1e-3, batch_size=3), {"epochs": 1}),
        (SGD(lr=0.05, momentum=0.5, batch_size=5), {"steps": 4}),
    ],
)
def test_vectorised_equals_loop(make_model, optimizer, work):
    torch.manual_seed(0)
    model = make_model()
    layout, params, data, train_x, train_y = federation(model)
    nodes = torch.arange(5)
    batches = local_batches(
        data, nodes, seed=1, round_idx=2, batch_size=optimizer.batch_size, **work
    )
    momentum = 0.01 * torch.randn_like(params) if optimizer.momentum else None

    vectorised, vectorised_momentum = params.clone(), None if momentum is None else momentum.clone()
    VectorisedTrainer(model, layout, optimizer).train(
        vectorised, state(vectorised_momentum), batches, train_x, train_y
    )
    looped, looped_momentum = params.clone(), None if momentum is None else momentum.clone()
    LoopTrainer(model, layout, optimizer).train(
        looped, state(looped_momentum), batches, train_x, train_y
    )

    assert not torch.allclose(vectorised, params)
    torch.testing.assert_close(vectorised, looped, rtol=1e-5, atol=1e-6)
    if momentum is not None:
        torch.testing.assert_close(vectorised_momentum, looped_momentum, rtol=1e-5, atol=1e-6)


def test_one_sgd_step_by_hand():
    # Logistic regression on one example: the gradient of cross-entropy is (softmax - onehot) x^T.
    model = logreg((2,), 2)
    layout = ParameterLayout.of(model)
    params = torch.zeros(1, layout.size)
    data = NodeData.from_shards([np.array([0])])
    train_x, train_y = torch.tensor([[1.0, 2.0]]), torch.tensor([1])
    batches = local_batches(data, torch.tensor([0]), seed=0, round_idx=0, batch_size=1, steps=1)
    VectorisedTrainer(model, layout, SGD(lr=0.5, batch_size=1)).train(
        params, None, batches, train_x, train_y
    )
    # softmax of zero logits is (1/2, 1/2); gradient rows: class 0 +1/2 x, class 1 -1/2 x.
    weight = layout.unflatten(params[0])["1.weight"]
    bias = layout.unflatten(params[0])["1.bias"]
    torch.testing.assert_close(weight, torch.tensor([[-0.25, -0.5], [0.25, 0.5]]))
    torch.testing.assert_close(bias, torch.tensor([-0.25, 0.25]))


def test_nodes_without_steps_are_untouched():
    model = mlp((8,), 3, (4,))
    layout, params, _, train_x, train_y = federation(model, num_nodes=2)
    data = NodeData.from_shards([np.array([], dtype=np.int64), np.arange(3)])
    batches = local_batches(data, torch.arange(2), seed=0, round_idx=0, batch_size=2, epochs=1)
    momentum = torch.ones_like(params)
    trained = params.clone()
    VectorisedTrainer(model, layout, SGD(lr=0.1, momentum=0.9)).train(
        trained, {"momentum": momentum}, batches, train_x, train_y
    )
    assert torch.equal(trained[0], params[0]) and torch.equal(
        momentum[0], torch.ones_like(params[0])
    )
    assert not torch.equal(trained[1], params[1])


def test_one_trainer_trains_chunks_of_any_size_as_fresh_trainers_do():
    """The gradient buffer kept between chunks: a larger chunk, then a smaller one, then one
    larger than any before train as trainers made for each."""
    model = mlp((8,), 3, (16, 8))
    layout, params, data, train_x, train_y = federation(model)
    optimizer = SGD(lr=0.1, batch_size=4)
    kept, fresh = params.clone(), params.clone()
    trainer = VectorisedTrainer(model, layout, optimizer)
    for chunk in (torch.arange(3), torch.arange(3, 4), torch.arange(5)):
        batches = local_batches(data, chunk, seed=1, round_idx=0, batch_size=4, epochs=2)
        rows = slice(int(chunk[0]), int(chunk[-1]) + 1)
        trainer.train(kept[rows], None, batches, train_x, train_y)
        VectorisedTrainer(model, layout, optimizer).train(
            fresh[rows], None, batches, train_x, train_y
        )
        assert torch.equal(kept, fresh)
    assert not torch.equal(kept, params)


def test_a_step_that_few_nodes_take_trains_those_alone(monkeypatch):
    """With 7, 3, 20, 1 and 29 examples in batches of 4, the nodes take 2, 1, 5, 1 and 8
    steps: once fewer than half of them step, gradients are taken only for those, and the
    result is that of taking them for every node (masked), as before."""
    model = mlp((8,), 3, (16, 8))
    layout, params, data, train_x, train_y = federation(model)
    batches = local_batches(data, torch.arange(5), seed=1, round_idx=0, batch_size=4, epochs=1)
    optimizer = SGD(lr=0.1, momentum=0.9, batch_size=4)

    def trained() -> tuple[torch.Tensor, torch.Tensor, list[int]]:
        trainer, rows, sizes = VectorisedTrainer(model, layout, optimizer), params.clone(), []
        gradients = trainer.gradients
        trainer.gradients = lambda at, *args, **kwargs: (
            sizes.append(len(at)) or gradients(at, *args, **kwargs)
        )
        momentum = torch.full_like(params, 0.01)
        trainer.train(rows, {"momentum": momentum}, batches, train_x, train_y)
        return rows, momentum, sizes

    alone, alone_momentum, sizes = trained()
    assert sizes == [5, 5, 2, 2, 2, 1, 1, 1]  # 3 of 5 take the second step: all computed
    monkeypatch.setattr("fedsim.training.vectorised.FEW", 0.0)  # every node at every step
    together, together_momentum, sizes = trained()
    assert sizes == [5] * 8
    torch.testing.assert_close(alone, together, rtol=1e-5, atol=1e-6)  # BLAS may round
    torch.testing.assert_close(alone_momentum, together_momentum, rtol=1e-5, atol=1e-6)
