"""The image models: shapes, parameter counts, vmap training, and re-initialisation."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from fedsim.errors import ConfigError
from fedsim.models import cnn_corn, cnn_femnist, gn_lenet, initialize, lenet5, resnet8, resnet20
from fedsim.training.layout import ParameterLayout
from fedsim.training.loop import LoopTrainer
from fedsim.training.schedule import NodeData, local_batches
from fedsim.training.sgd import SGD
from fedsim.training.vectorised import VectorisedTrainer

MNIST, CIFAR = (1, 28, 28), (3, 32, 32)

# (model, input shape, classes, parameters); the counts are worked out layer by layer:
# lenet5 MNIST: conv 156 + conv 2,416 + FC 48,120 + 10,164 + 850; on CIFAR conv1 has 456.
# gn_lenet: conv 2,432 + GN 64 + conv 25,632 + GN 64 + conv 51,264 + GN 128 + FC 5,770.
# cnn_femnist: conv 832 + conv 51,264 + FC 3136*2048+2048 + FC 2048*62+62 (hidden 512:
# 1,690,046, MoDeST's count).  cnn_corn: conv 320 + conv 18,496 + FC 3136*128+128 + 1,290
# (CorN-DSGD's "about 421k").  resnet20: He et al.'s 0.27M; resnet8 has one block per stage.
CASES = [
    (lenet5, MNIST, 10, 61_706),
    (lenet5, CIFAR, 10, 62_006),
    (gn_lenet, CIFAR, 10, 85_354),
    (cnn_femnist, MNIST, 62, 6_603_710),
    (cnn_corn, MNIST, 10, 421_642),
    (resnet8, CIFAR, 10, 75_290),
    (resnet20, CIFAR, 10, 269_722),
]


@pytest.mark.parametrize(
    "make, shape, classes, count",
    CASES,
    ids=[f"{make.__name__}-{shape[-1]}" for make, shape, *_ in CASES],
)
def test_output_shape_and_parameter_count(make, shape, classes, count):
    model = make(shape, classes)
    assert model(torch.rand(2, *shape)).shape == (2, classes)
    assert ParameterLayout.of(model).size == count  # no buffers, so fedsim can stack it


def test_modest_femnist_variant_is_one_override_away():
    assert ParameterLayout.of(cnn_femnist(MNIST, 62, hidden=512)).size == 1_690_046


@pytest.mark.parametrize("make", [lenet5, gn_lenet, cnn_corn, cnn_femnist, resnet8, resnet20])
def test_flat_inputs_are_rejected(make):
    with pytest.raises(ConfigError, match=r"needs image inputs .* input_shape=\(64,\)"):
        make((64,), 10)


def test_too_small_images_are_rejected():
    with pytest.raises(ConfigError, match="model=lenet5 cannot take inputs of shape"):
        lenet5((1, 8, 8), 10)


@pytest.mark.parametrize(
    "make, setting",
    [
        (lambda: gn_lenet(CIFAR, 10, groups=3), "model.groups=3"),
        (lambda: resnet20(CIFAR, 10, groups=5), "model.groups=5"),
        (lambda: cnn_femnist(MNIST, 62, hidden=0), "model.hidden=0"),
        (lambda: lenet5(MNIST, 10, padding=-1), "model.padding=-1"),
    ],
    ids=["gn_lenet", "resnet20", "cnn_femnist", "lenet5"],
)
def test_bad_settings_name_themselves(make, setting):
    with pytest.raises(ConfigError, match=setting):
        make()


# 4 classes and a narrow hidden layer for cnn_femnist keep the test fast; nothing else shrinks.
TRAINED = [
    pytest.param(lambda: lenet5(MNIST, 4), MNIST, id="lenet5-28"),
    pytest.param(lambda: lenet5(CIFAR, 4), CIFAR, id="lenet5-32"),
    pytest.param(lambda: gn_lenet(CIFAR, 4), CIFAR, id="gn_lenet"),
    pytest.param(lambda: cnn_femnist(MNIST, 4, hidden=16), MNIST, id="cnn_femnist"),
    pytest.param(lambda: resnet8(CIFAR, 4), CIFAR, id="resnet8"),
    pytest.param(lambda: resnet20(CIFAR, 4), CIFAR, id="resnet20"),
]


@pytest.mark.parametrize("make, shape", TRAINED)
def test_vectorised_equals_loop(make, shape):
    torch.manual_seed(0)
    model = make()
    layout = ParameterLayout.of(model)
    generator = torch.Generator().manual_seed(1)
    train_x = torch.rand(7, *shape, generator=generator)
    train_y = torch.randint(0, 4, (7,), generator=generator)
    data = NodeData.from_shards([np.arange(0, 3), np.arange(3, 4), np.arange(4, 7)])
    params = layout.flatten(model) + 0.05 * torch.randn(3, layout.size, generator=generator)
    momentum = 0.01 * torch.randn(3, layout.size, generator=generator)
    optimizer = SGD(lr=0.1, momentum=0.5, batch_size=2)
    batches = local_batches(data, torch.arange(3), seed=0, round_idx=0, batch_size=2, steps=2)

    vectorised, vectorised_momentum = params.clone(), momentum.clone()
    VectorisedTrainer(model, layout, optimizer).train(
        vectorised, {"momentum": vectorised_momentum}, batches, train_x, train_y
    )
    looped, looped_momentum = params.clone(), momentum.clone()
    LoopTrainer(model, layout, optimizer).train(
        looped, {"momentum": looped_momentum}, batches, train_x, train_y
    )

    assert not torch.allclose(vectorised, params)
    torch.testing.assert_close(vectorised, looped, rtol=1e-5, atol=1e-6)
    # Momentum reaches 7 in GroupNorm's LeNet, whose float32 rounding (5e-7) the two
    # trainers' different summation orders carry into entries near zero: the absolute
    # tolerance scales with the largest value.
    scale = max(1.0, float(looped_momentum.abs().max()))
    torch.testing.assert_close(vectorised_momentum, looped_momentum, rtol=1e-5, atol=1e-6 * scale)


def parameters(model: nn.Module) -> torch.Tensor:
    return ParameterLayout.of(model).flatten(model)


@pytest.mark.parametrize("scheme", ["default", "xavier", "kaiming"])
def test_initialize_is_a_function_of_the_generator(scheme):
    model = gn_lenet(CIFAR, 10)
    draws = []
    for seed in (0, 0, 1):
        initialize(model, scheme, torch.Generator().manual_seed(seed))
        draws.append(parameters(model))
    assert torch.equal(draws[0], draws[1])
    assert not torch.equal(draws[0], draws[2])


def test_initialize_leaves_the_global_rng_alone():
    model = lenet5(MNIST, 10)
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    initialize(model, "default", torch.Generator().manual_seed(0))
    assert torch.equal(torch.rand(3), expected)


def test_default_scheme_is_the_modules_own_reset():
    # Same layers, same torch seed: what initialize does equals reset_parameters() by hand.
    model = lenet5(MNIST, 10)
    generator = torch.Generator().manual_seed(3)
    seed = int(torch.randint(2**62, (1,), generator=torch.Generator().manual_seed(3)))
    initialize(model, "default", generator)
    reference = lenet5(MNIST, 10)
    torch.manual_seed(seed)
    for module in reference.modules():
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
    assert torch.equal(parameters(model), parameters(reference))


@pytest.mark.parametrize(
    "scheme, variance",
    [
        ("xavier", lambda fan_in, fan_out: 2 / (fan_in + fan_out)),
        ("kaiming", lambda fan_in, fan_out: 2 / fan_in),
    ],
    ids=["xavier", "kaiming"],
)
def test_xavier_and_kaiming_variances(scheme, variance):
    model = resnet20(CIFAR, 10)
    initialize(model, scheme, torch.Generator().manual_seed(0))
    for module in model.modules():
        if isinstance(module, nn.Conv2d | nn.Linear):
            weight = module.weight
            receptive = math.prod(weight.shape[2:])
            fan_in, fan_out = weight.shape[1] * receptive, weight.shape[0] * receptive
            assert weight.var().item() == pytest.approx(variance(fan_in, fan_out), rel=0.25)
            assert module.bias is None or torch.count_nonzero(module.bias) == 0
        elif isinstance(module, nn.GroupNorm):
            assert torch.equal(module.weight, torch.ones_like(module.weight))
            assert torch.count_nonzero(module.bias) == 0


def test_modules_that_cannot_be_reset_are_named():
    class Scale(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.factor = nn.Parameter(torch.ones(1))

    with pytest.raises(ConfigError, match="Scale has parameters but no reset_parameters"):
        initialize(nn.Sequential(nn.Linear(2, 2), Scale()), "xavier", torch.Generator())


def test_unknown_scheme_lists_the_legal_ones():
    with pytest.raises(
        ConfigError, match="init_scheme=orthogonal is not one of: default, xavier, kaiming"
    ):
        initialize(lenet5(MNIST, 10), "orthogonal", torch.Generator())
