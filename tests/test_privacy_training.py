"""Noisy local steps, a per-example gradient transform: per-example clipping equals a plain
per-example loop, the noise goes on the clipped sum before the division by B, the noisy step
comes before gossip and before the strategy's own transforms."""

import numpy as np
import pytest
import torch
from helpers import path_federation, started_backend, zero_logreg_task

from fedsim.models import lenet5, mlp
from fedsim.plans import Gossip, RoundPlan, Train
from fedsim.privacy import Privacy
from fedsim.privacy.covariance import NoiseCovariance
from fedsim.privacy.noise import NoisyStep
from fedsim.strategies import DPSGD
from fedsim.training.layout import ParameterLayout
from fedsim.training.per_example import PerExampleGradients


def slow_clipped_sum(model, flat, x, y, count, clip):
    """The textbook loop: one backward pass per example, clip its gradient, add it up."""
    layout = ParameterLayout.of(model)
    for weight, view in zip(model.parameters(), layout.unflatten(flat).values(), strict=True):
        weight.data = view.clone()
    total = torch.zeros_like(flat)
    for index in range(count):
        model.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x[index : index + 1]), y[index : index + 1])
        loss.backward()
        gradient = torch.cat([w.grad.reshape(-1) for w in model.parameters()])
        total += gradient * min(1.0, clip / max(gradient.norm().item(), 1e-30))
    return total


@pytest.mark.parametrize(
    "model, shape, clip",  # per-example norms here: MLP 1.0 to 2.5, LeNet-5 3.2 to 7.1
    [(mlp((12,), 3, hidden=(8,)), (12,), 1.5), (lenet5((1, 28, 28), 3), (1, 28, 28), 5.0)],
)
def test_clipped_sums_equal_a_per_example_loop(model, shape, clip):
    torch.manual_seed(0)
    layout = ParameterLayout.of(model)
    nodes, batch = 3, 5
    params = layout.flatten(model) + 0.05 * torch.randn(nodes, layout.size)
    x, y = torch.randn(nodes, batch, *shape), torch.randint(0, 3, (nodes, batch))
    counts = [5, 3, 1]  # short batches: padding slots must weigh nothing
    weight = (torch.arange(batch)[None] < torch.tensor(counts)[:, None]).float()
    per_example = PerExampleGradients(model, layout)(params, x, y)
    no_noise = NoisyStep(clip, fixed_noise(nodes, variance=0.0), seed=0, batch_size=1)
    sums = no_noise.reduce(per_example, weight, torch.arange(nodes), round_idx=0, step=0)
    for node, count in enumerate(counts):
        expected = slow_clipped_sum(model, params[node], x[node], y[node], count, clip)
        assert torch.allclose(sums[node], expected, atol=1e-5)


def fixed_noise(num_nodes=3, variance=1.0):
    """Independent noise: R = variance I."""
    empty = np.zeros((0, 2), dtype=np.int64)
    return NoiseCovariance(num_nodes, variance, empty, 0.0, None)


def test_noise_is_added_to_the_clipped_sum_before_dividing_by_the_batch_size():
    task = zero_logreg_task(lr=0.5)  # batch_size 4; node 2 holds two examples
    backend = started_backend(task, 3, zero=True)
    step = NoisyStep(clip=0.1, covariance=fixed_noise(), seed=7, batch_size=4)
    backend.execute(RoundPlan((Train(np.arange(3), steps=1, transforms=(step,)),)), round_idx=0)
    noise = step.draw(torch.arange(3), round_idx=0, step=0, dim=6).float()
    x, y = task.dataset.train_x, task.dataset.train_y
    from helpers import hand_gradient

    for node, examples in enumerate([[0], [1], [2, 3]]):
        clipped = sum(
            g * min(1.0, 0.1 / g.norm().item())
            for g in (hand_gradient(x[e], int(y[e])) for e in examples)
        )
        expected = -0.5 * (clipped + noise[node]) / 4  # lr (sum + noise) / B
        assert torch.allclose(backend.params[node], expected, atol=1e-6)


def test_the_loop_and_the_vectorised_path_take_the_same_noisy_steps():
    task = zero_logreg_task(lr=0.5)
    step = NoisyStep(clip=0.3, covariance=fixed_noise(), seed=1, batch_size=4)
    plan = RoundPlan((Train(np.arange(3), steps=3, transforms=(step,)),))
    results = []
    for vectorise in (True, False):
        backend = started_backend(task, 3, vectorise=vectorise, chunk_size=2)
        backend.execute(plan, round_idx=4)
        results.append(backend.params.clone())
    assert torch.allclose(*results, atol=1e-6)


def test_dpsgd_adds_the_noise_before_it_gossips():
    task = zero_logreg_task(lr=0.5)
    federation = path_federation(task)
    privacy = Privacy("local", epsilon=5.0, clip=0.1)
    first_plan = DPSGD(local_epochs=None, local_steps=1).plan(0, federation)
    privacy.prepare(first_plan, federation, rounds=10, name="DPSGD")
    plan = privacy.apply(DPSGD(local_epochs=None, local_steps=1).plan(0, federation), 0)
    train, gossip = plan.steps
    assert isinstance(train, Train) and isinstance(gossip, Gossip)
    backend = started_backend(task, 3, zero=True)
    backend.execute(RoundPlan((train,)), round_idx=0)
    noisy = backend.params.clone()  # x - lr (G + n) / B: what each node sends
    backend.execute(RoundPlan((gossip,)), round_idx=0)
    weights = torch.tensor(gossip.weights.toarray(), dtype=torch.float32)
    assert torch.allclose(backend.params, weights @ noisy, atol=1e-6)  # own model via W_ii
    (noisy_step,) = train.transforms
    assert noisy_step.covariance.independent == pytest.approx(1 / privacy.bound)


def test_a_nodes_private_steps_have_the_same_bits_in_chunks_of_any_size():
    from fedsim.data.datasets import Dataset
    from fedsim.task import Task
    from fedsim.training.schedule import NodeData
    from fedsim.training.sgd import SGD

    generator = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 12, generator=generator), torch.randint(0, 3, (64,), generator=generator)
    shards = [np.arange(8 * node, 8 * node + 8) for node in range(8)]
    task = Task(
        mlp((12,), 3, hidden=(16,)),
        Dataset("random", x, y, x, y, num_classes=3),
        NodeData.from_shards(shards),
        SGD(lr=0.1, batch_size=4),
        seed=0,
    )
    factor = np.random.default_rng(2).normal(size=(8, 8))
    covariance = NoiseCovariance(8, 0.5, np.array([[0, 1], [1, 2]]), 1.0, factor)
    step = NoisyStep(clip=0.5, covariance=covariance, seed=5, batch_size=4)
    plan = RoundPlan((Train(np.arange(8), steps=3, transforms=(step,)),))
    results = {}
    for chunk_size in (1, 3, 8):
        backend = started_backend(task, 8, vectorise=True, chunk_size=chunk_size)
        backend.execute(plan, round_idx=1)
        results[chunk_size] = backend.params.clone()
    for chunk_size in (3, 8):
        assert torch.equal(results[chunk_size], results[1]), f"chunks of {chunk_size}"


def test_the_noisy_step_comes_first_in_a_chain_and_the_strategys_transforms_follow_it():
    from fedsim.strategies.fedprox import Proximal

    task = zero_logreg_task(lr=0.5)
    noisy = NoisyStep(clip=0.3, covariance=fixed_noise(), seed=1, batch_size=4)
    chained = RoundPlan((Train(np.arange(3), steps=3, transforms=(noisy, Proximal(2.0))),))
    alone = RoundPlan((Train(np.arange(3), steps=3, transforms=(noisy,)),))
    results = {}
    for name, plan in (("chained", chained), ("alone", alone)):
        for vectorise in (True, False):
            backend = started_backend(task, 3, vectorise=vectorise, zero=True)
            backend.execute(plan, round_idx=2)
            results[name, vectorise] = backend.params.clone()
    assert torch.allclose(results["chained", True], results["chained", False], atol=1e-6)
    assert not torch.allclose(results["chained", True], results["alone", True])
    with pytest.raises(Exception, match="per-example gradient transform must come first"):
        backend.execute(
            RoundPlan((Train(np.arange(3), steps=1, transforms=(Proximal(2.0), noisy)),)), 0
        )
