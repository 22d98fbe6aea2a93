import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import compose_config

from fedsim.build import build_simulation
from fedsim.data.datasets import digits
from fedsim.errors import ConfigError


def test_digits_is_scaled_and_split_the_same_way_every_time():
    data = digits()
    assert data.input_shape == (64,) and data.num_classes == 10
    assert data.train_x.min() >= 0 and data.train_x.max() <= 1
    assert len(data.train_y) + len(data.test_y) == 1797
    assert len(data.test_y) == 360
    assert torch.equal(digits().test_x, data.test_x)
    assert set(data.test_y.tolist()) == set(range(10))


@pytest.mark.parametrize("test_fraction", [0.2, 0.3])
def test_digits_are_scikit_learns_split_as_train_test_split_draws_it(test_fraction):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    features, labels = load_digits(return_X_y=True)
    train_x, test_x, train_y, test_y = train_test_split(
        features / 16.0, labels, test_size=test_fraction, stratify=labels, random_state=0
    )
    data = digits(test_fraction=test_fraction)
    assert np.array_equal(data.train_x.numpy(), train_x.astype(np.float32))
    assert np.array_equal(data.test_x.numpy(), test_x.astype(np.float32))
    assert np.array_equal(data.train_y.numpy(), train_y)
    assert np.array_equal(data.test_y.numpy(), test_y)


def test_a_default_run_imports_nothing_it_does_not_use(tmp_path):
    """scikit-learn, Ray, cvxpy, matplotlib: each costs a run's start-up a second or so;
    networkx and scipy.sparse (registered to load on first use) 0.4 s without a graph;
    pandas, which pyarrow's ``pa.table`` imports, 0.25 s."""
    script = (
        "import sys\n"
        "from fedsim.cli import main\n"
        f"assert main(['run', 'rounds=1', 'progress=false', 'hydra.run.dir={tmp_path}/run']) == 0\n"
        "loaded = {m for m, module in sys.modules.items()"
        " if type(module).__name__ != '_LazyModule'}\n"
        "print(sorted({m.split('.')[0] for m in loaded}"
        " & {'sklearn', 'ray', 'cvxpy', 'matplotlib', 'dp_accounting', 'torchvision', 'networkx',"
        " 'pandas'}"
        " | loaded & {'scipy.sparse', 'scipy.optimize'}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "[]"


def test_tiling_repeats_the_train_split():
    data, tiled = digits(), digits(tile=3)
    assert len(tiled.train_y) == 3 * len(data.train_y)
    assert torch.equal(tiled.train_x[len(data.train_y) :][: len(data.train_y)], data.train_x)
    assert torch.equal(tiled.test_x, data.test_x)


def test_image_size_gives_resized_images_of_the_same_examples():
    flat, images = digits(), digits(image_size=28)
    assert images.input_shape == (1, 28, 28)
    assert images.train_x.dtype == torch.float32
    assert images.train_x.min() >= 0 and images.train_x.max() <= 1
    assert torch.equal(images.train_y, flat.train_y) and torch.equal(images.test_y, flat.test_y)
    # At the original size the images are the flat features, row by row.
    assert torch.equal(digits(image_size=8).train_x, flat.train_x.reshape(-1, 1, 8, 8))
    # Doubling bilinearly (half-pixel centres): output (1, 1) sits a quarter of the way
    # from input (0, 0) to input (1, 1), so its weights are (3/4, 1/4) along each axis.
    doubled, pixels = digits(image_size=16).test_x, flat.test_x.reshape(-1, 8, 8)
    expected = (
        9 * pixels[:, 0, 0] + 3 * pixels[:, 0, 1] + 3 * pixels[:, 1, 0] + pixels[:, 1, 1]
    ) / 16
    assert torch.allclose(doubled[:, 0, 1, 1], expected, atol=1e-6)


def test_bad_image_size_is_named():
    with pytest.raises(ConfigError, match=r"data.image_size=0 must be null .* or an integer >= 1"):
        digits(image_size=0)


def test_image_digits_compose_with_the_default_mlp():
    simulation = build_simulation(compose_config("++data.image_size=28", "num_nodes=12"))
    assert simulation.task.dataset.input_shape == (1, 28, 28)
