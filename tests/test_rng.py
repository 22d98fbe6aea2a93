import numpy as np
import torch

from fedsim import rng


def test_uniform_depends_only_on_its_coordinates():
    counters = torch.arange(8)
    together = rng.uniform(7, rng.SHUFFLE, 3, torch.tensor([0, 5, 9]), counters)
    alone = rng.uniform(7, rng.SHUFFLE, 3, torch.tensor([5]), counters)
    assert torch.equal(together[1], alone[0])
    assert torch.equal(together, rng.uniform(7, rng.SHUFFLE, 3, torch.tensor([0, 5, 9]), counters))


def test_uniform_changes_with_seed_round_and_stream():
    nodes, counters = torch.arange(2), torch.arange(4)
    base = rng.uniform(0, 1, 0, nodes, counters)
    for other in (
        rng.uniform(1, 1, 0, nodes, counters),
        rng.uniform(0, 2, 0, nodes, counters),
        rng.uniform(0, 1, 1, nodes, counters),
    ):
        assert not torch.equal(base, other)


def test_uniform_is_uniform_on_unit_interval():
    values = rng.uniform(0, 0, 0, torch.arange(10), torch.arange(10_000)).flatten()
    assert values.min() >= 0 and values.max() < 1
    assert abs(values.mean().item() - 0.5) < 0.01
    histogram = np.histogram(values.numpy(), bins=10, range=(0, 1))[0] / len(values)
    assert np.allclose(histogram, 0.1, atol=0.01)


def test_generator_is_a_pure_function_of_coordinates():
    assert rng.generator(1, 2, 3).integers(1 << 30) == rng.generator(1, 2, 3).integers(1 << 30)
    assert rng.generator(1, 2, 3).integers(1 << 30) != rng.generator(1, 2, 4).integers(1 << 30)
