"""From a composed config to a ready simulation: the only place that instantiates."""

from __future__ import annotations

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate as hydra_instantiate
from omegaconf import DictConfig

from fedsim.config import check_config
from fedsim.engine import Simulation
from fedsim.errors import ConfigError
from fedsim.strategies.base import Federation
from fedsim.task import Task
from fedsim.topology.mixing import metropolis_hastings
from fedsim.training.schedule import NodeData


def build_simulation(cfg: DictConfig) -> Simulation:
    """Check ``cfg`` and build every part of the run; raises :class:`ConfigError` on bad input.

    Cheap enough to run for every job of a sweep before the first one starts.
    """
    check_config(cfg)
    device = _device(cfg.device)
    strategy = instantiate(cfg.strategy)
    optimizer = instantiate(cfg.optimizer)
    backend = instantiate(cfg.backend)
    dataset = instantiate(cfg.data)
    shards = instantiate(cfg.partition)(
        labels=dataset.train_y.numpy(), num_nodes=cfg.num_nodes, seed=cfg.seed
    )
    graph = None
    if strategy.uses_topology:
        graph = instantiate(cfg.topology)(num_nodes=cfg.num_nodes, seed=cfg.seed)
    node_data = NodeData.from_shards(shards, device)
    federation = Federation(
        num_nodes=cfg.num_nodes,
        seed=cfg.seed,
        graph=graph,
        mixing=None if graph is None else metropolis_hastings(graph),
        num_examples=node_data.num_examples,
    )
    strategy.validate(federation)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = instantiate(cfg.model)(
            input_shape=dataset.input_shape, num_classes=dataset.num_classes
        )
    task = Task(model.to(device), dataset.to(device), node_data, optimizer, cfg.seed)
    task.layout  # noqa: B018 - fails early for models fedsim cannot stack
    return Simulation(
        strategy=strategy,
        federation=federation,
        task=task,
        backend=backend,
        rounds=cfg.rounds,
        eval_every=cfg.eval_every,
        eval_nodes=cfg.eval_nodes,
        header_bytes=cfg.header_bytes,
    )


def instantiate(node: DictConfig):
    """Hydra's ``instantiate``, passing a :class:`ConfigError` of the target through unwrapped."""
    try:
        return hydra_instantiate(node)
    except InstantiationException as error:
        if isinstance(error.__cause__, ConfigError):
            raise error.__cause__ from None
        raise


def _device(name: str) -> torch.device:
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device={name} but this machine has no CUDA device; use device=cpu")
        index = torch.device(name).index or 0
        if index >= torch.cuda.device_count():
            raise ConfigError(
                f"device={name} but only {torch.cuda.device_count()} CUDA devices exist"
            )
    return torch.device(name)
