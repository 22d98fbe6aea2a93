"""Shared helpers: compose fedsim's real Hydra config in-process."""

from __future__ import annotations

import os

import pytest
import torch
from hydra import compose, initialize_config_dir
from hypothesis import HealthCheck, settings
from omegaconf import DictConfig

import fedsim.schemas  # noqa: F401  (registers the schemas the YAML files extend)
from fedsim.config import config_dir

# At most two threads, or fewer when OMP_NUM_THREADS says so (results must not depend on it);
# one per pytest-xdist worker, which share the machine's cores.
_THREADS = 1 if "PYTEST_XDIST_WORKER" in os.environ else 2
torch.set_num_threads(
    min(int(os.environ.get("OMP_NUM_THREADS", _THREADS)), _THREADS, os.cpu_count() or 1)
)

# Property tests: "ci" (the default) draws the same examples on every run, so a failure in CI
# is a real one and reproduces; "explore" draws 10x as many, fresh each run, and keeps what it
# finds in .hypothesis/ (HYPOTHESIS_PROFILE=explore pytest tests/test_validation_fuzz.py).
_COMMON = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow]}
settings.register_profile("ci", derandomize=True, database=None, print_blob=True, **_COMMON)
settings.register_profile("explore", max_examples=1000, **_COMMON)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def examples(count: int) -> int:
    """``count`` examples under the "ci" profile, scaled with the profile's max_examples."""
    return max(1, count * settings.default.max_examples // 100)


def compose_config(*overrides: str) -> DictConfig:
    """fedsim's config with ``overrides`` applied, as ``fedsim run`` composes it."""
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose("config", overrides=["progress=false", *overrides])


@pytest.fixture
def small_config():
    """A fast config: few nodes and rounds."""
    return lambda *overrides: compose_config("num_nodes=6", "rounds=3", "eval_every=1", *overrides)


@pytest.fixture(scope="module")
def local_ray():
    """One Ray for the module: loopback only, two CPUs, no dashboard; shut down after."""
    ray = pytest.importorskip("ray")
    from fedsim.backends.ray_local import init_local_ray

    init_local_ray(num_cpus=2)
    yield
    ray.shutdown()
