"""Shared helpers: compose fedsim's real Hydra config in-process."""

from __future__ import annotations

import os

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

import fedsim.schemas  # noqa: F401  (registers the schemas the YAML files extend)
from fedsim.config import config_dir

torch.set_num_threads(min(2, os.cpu_count() or 1))


def compose_config(*overrides: str) -> DictConfig:
    """fedsim's config with ``overrides`` applied, as ``fedsim run`` composes it."""
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose("config", overrides=["progress=false", *overrides])


@pytest.fixture
def small_config():
    """A fast config: few nodes and rounds."""
    return lambda *overrides: compose_config("num_nodes=6", "rounds=3", "eval_every=1", *overrides)
