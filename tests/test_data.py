import torch

from fedsim.data.datasets import digits


def test_digits_is_scaled_and_split_the_same_way_every_time():
    data = digits()
    assert data.input_shape == (64,) and data.num_classes == 10
    assert data.train_x.min() >= 0 and data.train_x.max() <= 1
    assert len(data.train_y) + len(data.test_y) == 1797
    assert len(data.test_y) == 360
    assert torch.equal(digits().test_x, data.test_x)
    assert set(data.test_y.tolist()) == set(range(10))


def test_tiling_repeats_the_train_split():
    data, tiled = digits(), digits(tile=3)
    assert len(tiled.train_y) == 3 * len(data.train_y)
    assert torch.equal(tiled.train_x[len(data.train_y) :][: len(data.train_y)], data.train_x)
    assert torch.equal(tiled.test_x, data.test_x)
