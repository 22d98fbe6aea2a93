import torch
from torch import nn

from fedsim.training.evaluate import Evaluator
from fedsim.training.layout import ParameterLayout


def test_many_rows_in_chunks_score_as_each_row_alone():
    generator = torch.Generator().manual_seed(0)
    model = nn.Linear(4, 3)
    layout = ParameterLayout.of(model)
    test_x = torch.randn(10, 4, generator=generator)
    test_y = torch.randint(0, 3, (10,), generator=generator)
    evaluator = Evaluator(model, layout, test_x, test_y, budget=30)  # 3 rows per chunk
    rows = torch.randn(7, layout.size, generator=generator)
    alone = torch.tensor([evaluator.model(row)[0] for row in rows])
    assert torch.equal(evaluator.accuracies(rows), alone)
    assert evaluator.accuracies(rows[:0]).shape == (0,)
    accuracies, losses = evaluator.scores(rows)
    assert torch.equal(accuracies, alone)
    torch.testing.assert_close(losses, torch.tensor([evaluator.model(row)[1] for row in rows]))


def test_one_model_at_a_time_scores_as_the_vectorised_chunks():
    """The loop that convolutional models use on CPU gives the vmapped scores."""
    generator = torch.Generator().manual_seed(1)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2 * 4 * 4, 3))
    layout = ParameterLayout.of(model)
    test_x = torch.randn(10, 1, 6, 6, generator=generator)
    test_y = torch.randint(0, 3, (10,), generator=generator)
    rows = torch.randn(5, layout.size, generator=generator)
    looped = Evaluator(model, layout, test_x, test_y, vectorise=False).scores(rows)
    chunked = Evaluator(model, layout, test_x, test_y, budget=20).scores(rows)
    assert torch.equal(looped[0], chunked[0])
    torch.testing.assert_close(looped[1], chunked[1])
    assert looped[0].shape == looped[1].shape == (5,)
    assert Evaluator(model, layout, test_x, test_y, vectorise=False).scores(rows[:0])[0].shape == (
        0,
    )
