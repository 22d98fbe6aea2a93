"""From a composed config to a ready simulation: the only place that instantiates."""

from __future__ import annotations

import copy
import inspect
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate as hydra_instantiate
from omegaconf import DictConfig, OmegaConf

from fedsim.aggregators import Aggregator
from fedsim.attacks import Attack
from fedsim.backends.local import chunk_rows
from fedsim.backends.pool import rows_used
from fedsim.config import check_config
from fedsim.data.datasets import Dataset
from fedsim.engine import Simulation
from fedsim.errors import ConfigError, check
from fedsim.federation import Federation, message_bytes
from fedsim.memory import (
    MemoryEstimate,
    allocation_failure,
    check_memory,
    choose_chunk_size,
    estimate_memory,
    memory_budget,
    with_resident_memory,
)
from fedsim.messages import LINKS, MessageTransforms
from fedsim.partitions import label_histograms
from fedsim.partitions.population import PopulationData
from fedsim.plans import RoundPlan
from fedsim.simulated.churn import Churn
from fedsim.strategies.base import Strategy
from fedsim.task import Task
from fedsim.training.schedule import NodeData
from fedsim.training.sgd import SGD

if TYPE_CHECKING:
    from fedsim.privacy import Privacy
    from fedsim.topology.base import Topology


def build_simulation(cfg: DictConfig) -> Simulation:
    """Check ``cfg`` and build every part of the run; raises :class:`ConfigError` on bad input.

    Cheap enough to run for every job of a sweep before the first one starts.
    """
    check_config(cfg)
    device = _device(cfg.device)
    strategy = instantiate(cfg.strategy)
    optimizer = instantiate(cfg.optimizer)
    check(
        isinstance(optimizer, SGD) or not getattr(strategy, "assumes_sgd", False),
        f"strategy={_choice(cfg.strategy)} assumes local SGD (with or without momentum); "
        f"use optimizer=sgd, not optimizer={_choice(cfg.optimizer)}",
    )
    dataset = instantiate(cfg.data)
    partition = instantiate(cfg.partition)
    check(
        cfg.num_nodes <= len(dataset.train_y) or _choice(cfg.partition).startswith("population_"),
        f"num_nodes={cfg.num_nodes} exceeds the {len(dataset.train_y)} training examples of "
        f"data={dataset.name}; lower num_nodes, raise data.tile, or draw a population of "
        "clients from the data set (partition=population_iid|population_dirichlet|"
        "population_classes)",
    )
    needs_components = "components" in inspect.signature(partition).parameters
    # Partition first when it can: it refuses impossible node counts before a graph is built.
    shards = None if needs_components else _partitioned(partition, dataset, None, cfg)
    topology = None
    if strategy.uses_topology or needs_components:
        from fedsim.topology.base import Topology  # networkx and scipy: only for a graph

        graphs = instantiate(cfg.topology)(num_nodes=cfg.num_nodes, seed=cfg.seed)
        rule = instantiate(cfg.mixing)
        topology = Topology(graphs, rule, name=f"topology={_choice(cfg.topology)}")
    if shards is None:
        shards = _partitioned(partition, dataset, topology, cfg)
    privacy = instantiate(cfg.privacy)
    messages = _message_transforms(cfg, cfg.num_nodes, privacy)
    if isinstance(shards, PopulationData):  # derived per client on demand, never unpacked
        _check_population(cfg, messages)
        trained, node_data, histograms = dataset, shards.to(device), None
    else:
        trained, trained_shards = _training_data(messages, dataset, shards)
        node_data = NodeData.from_shards(trained_shards, device)
        histograms = label_histograms(dataset.train_y.numpy(), shards, dataset.num_classes)
    federation = Federation(
        cfg.num_nodes,
        cfg.seed,
        topology,
        node_data.num_examples,
        network=instantiate(cfg.network)(num_nodes=cfg.num_nodes, seed=cfg.seed),
        churn=_churn(cfg, strategy),
        batch_size=optimizer.batch_size,
        momentum=optimizer.momentum,
        label_histograms=histograms,
    )
    strategy.validate(federation)
    check(
        cfg.backend.get("rows", "all") == "all" or cfg.evaluate == "average",
        "evaluate=individual scores every node's own model, which backend.rows=on_demand "
        "does not keep between rounds: use evaluate=average or backend.rows=all",
    )
    aggregator = instantiate(cfg.aggregator)
    if aggregator.weighs_clients:
        check(
            strategy.weighs_clients,
            f"aggregator={_choice(cfg.aggregator)} sets the client weights of a server's "
            "synchronous average: use strategy=fedavg, fedprox, fednova, scaffold, fedavgm, "
            f"fedadagrad, fedadam or fedyogi, not strategy={_choice(cfg.strategy)}",
        )
        strategy.reweighting = aggregator
    check(
        not (aggregator.combines_rows and strategy.buffers_messages),
        f"aggregator={_choice(cfg.aggregator)} combines the received models themselves, but "
        f"strategy={_choice(cfg.strategy)} keeps only their weighted sum; use aggregator=mean "
        "or aggregator=variance_corrected",
    )
    try:
        model = instantiate(cfg.model)(
            input_shape=dataset.input_shape, num_classes=dataset.num_classes
        )
    except (RuntimeError, MemoryError) as error:
        reason = allocation_failure(error)
        if reason is None:
            raise
        raise ConfigError(
            f"model={_choice(cfg.model)} with these settings needs more memory than exists "
            f"({reason})"
        ) from None
    task = Task(
        model.to(device),
        trained.to(device),
        node_data,
        optimizer,
        cfg.seed,
        cfg.init,
        cfg.init_scheme,
        lr_schedule=instantiate(cfg.lr_schedule),
    )
    size = message_bytes(task.layout.size, cfg.header_bytes)
    link_bytes = {
        link: messages.wire_bytes(link, size, task.layout.size)
        for link in LINKS
        if messages.on(link)
    }
    federation = replace(federation, message_bytes=size, link_bytes=link_bytes)
    plan = first_plan(strategy, federation)
    for transform in messages.chain:  # an attack that forges gossip messages needs a gossip step
        transform.check_plan(plan)
    stepped = any(getattr(step, "step_size", None) is not None for step in plan.steps)
    check(
        not (stepped and (aggregator.combines_rows or aggregator.corrects)),
        f"strategy={_choice(cfg.strategy)} moves by a step size towards the plain mean of what "
        f"a node receives; use aggregator=mean, not aggregator={_choice(cfg.aggregator)}",
    )
    fewest = _fewest_combined(plan, federation.num_nodes)
    if fewest:
        aggregator.check_received(fewest)
    _check_tolerance(cfg, plan, aggregator, messages.byzantine_nodes(), federation.num_nodes)
    if privacy is not None:
        privacy.prepare(plan, federation, cfg.rounds, type(strategy).__name__)
    estimate = _memory_estimate(
        cfg, task, federation, plan, strategy, aggregator, privacy, messages, device
    )
    # backend.chunk_size=auto is decided before the backend is built, and built into it.
    auto = cfg.backend.get("chunk_size") == "auto"
    resolved = {"chunk_size": estimate.chunk_size} if auto else {}
    backend = instantiate(cfg.backend, **resolved)
    simulation = Simulation(
        strategy=strategy,
        federation=federation,
        task=task,
        backend=backend,
        aggregator=aggregator,
        messages=messages,
        rounds=cfg.rounds,
        max_sim_time_s=cfg.max_sim_time_s,
        budget=instantiate(cfg.budget),
        logger=instantiate(cfg.logger),
        settings=OmegaConf.to_container(cfg, resolve=True),
        evaluate=cfg.evaluate,
        eval_every=cfg.eval_every,
        eval_nodes=cfg.eval_nodes,
        checkpoint_every=cfg.checkpoint_every,
        on_divergence=cfg.on_divergence,
        label_histograms=histograms,
        privacy=privacy,
    )
    check_memory(estimate, device)
    return simulation


def first_plan(strategy: Strategy, federation: Federation) -> RoundPlan:
    """The plan of round 0, made once before the run by a copy of the strategy: stateful
    protocols (MoDeST, gossip) must start the run untouched.  What privacy and the memory
    estimate need to know of a run's rounds, they read here.  No later round is planned: a
    topology drawn afresh each round keeps only its latest matrix, which round 0 must still
    find."""
    return copy.deepcopy(strategy).plan(0, federation)


def _fewest_combined(plan: RoundPlan, num_nodes: int) -> int:
    """The fewest models any receiver combines in ``plan`` (what a robust aggregator needs
    enough of: Krum more than 2f + 2), or 0 when nobody does or the plan cannot say."""
    counts = np.concatenate([step.messages(num_nodes).fan_in for step in plan.steps] + [[0]])
    known = counts[counts > 0]
    return int(known.min()) if len(known) else 0


def _most_byzantine_received(plan: RoundPlan, byzantine: np.ndarray, num_nodes: int) -> int:
    """The most models from ``byzantine`` nodes that one honest row receives in a step of
    ``plan``."""
    most = 0
    for step in plan.steps:
        messages = step.messages(num_nodes)
        forged = np.isin(messages.senders, byzantine) & ~np.isin(messages.receivers, byzantine)
        if forged.any():
            most = max(most, int(np.bincount(messages.receivers[forged]).max()))
    return most


def _check_tolerance(
    cfg: DictConfig, plan: RoundPlan, aggregator: Aggregator, byzantine: np.ndarray, num_nodes: int
) -> None:
    """Refuse an aggregator set to withstand fewer Byzantine models per receiver than round 0
    gives one (rounds that sample clients afresh may draw more or fewer)."""
    assumed = aggregator.assumed_byzantine()
    if assumed is None or not len(byzantine):
        return
    most = _most_byzantine_received(plan, byzantine, num_nodes)
    attack = "attack.nodes" if cfg.attack.get("nodes") is not None else "attack.fraction"
    check(
        most <= assumed,
        f"{attack}={cfg.attack.get(attack.split('.')[1])} puts {most} Byzantine models among "
        f"those one honest receiver combines in round 0, more than the aggregator.f={assumed} "
        f"the aggregator withstands: raise aggregator.f to {most} (with enough models per "
        f"receiver) or lower {attack}",
    )


def _message_transforms(
    cfg: DictConfig, num_nodes: int, privacy: Privacy | None
) -> MessageTransforms:
    """The chain of what happens to a message on its way: the attack, a privacy mechanism's
    encoding of the messages (``privacy=rqm``), then the compression."""
    encoding = None if privacy is None else privacy.message_transform
    messages = MessageTransforms.of(
        [instantiate(cfg.attack), encoding, instantiate(cfg.compression)]
    )
    for transform in messages.chain:
        transform.prepare(num_nodes, cfg.seed)
    return messages


def _training_data(
    messages: MessageTransforms, dataset: Dataset, shards: list[np.ndarray]
) -> tuple[Dataset, list[np.ndarray]]:
    """The data the nodes train on and each node's examples in it: the partition's, unless an
    attack poisons its Byzantine nodes' (label flip).  The test split stays the data set's."""
    for transform in messages.chain:
        if isinstance(transform, Attack):
            dataset, shards = transform.poison(dataset, shards)
    return dataset, shards


def _churn(cfg: DictConfig, strategy: Strategy) -> Churn:
    """The churn schedule; only strategies with a protocol for failures accept one."""
    churn = instantiate(cfg.churn)(num_nodes=cfg.num_nodes, seed=cfg.seed)
    check(
        churn.static or strategy.handles_churn,
        f"churn={_choice(cfg.churn)} needs a strategy that copes with failures "
        f"(modest, fl_fixed_server, gossip_learning), not strategy={_choice(cfg.strategy)}: "
        "its rounds would wait forever for a node that is gone",
    )
    return churn


def _memory_estimate(
    cfg: DictConfig,
    task: Task,
    federation: Federation,
    plan: RoundPlan,
    strategy: Strategy,
    aggregator: Aggregator,
    privacy: Privacy | None,
    messages: MessageTransforms,
    device: torch.device,
) -> MemoryEstimate:
    """The run's memory, trained in chunks of backend.chunk_size nodes (null: those that
    ``CHUNK_BYTES`` of rows hold); with
    backend.chunk_size=auto, in the largest chunks whose run fits in memory (all the nodes
    a round trains where the free memory is unknown)."""
    configured = chunk_rows(cfg.backend.get("chunk_size"), task.layout.size)
    on_demand = _rows_on_demand(strategy, federation)
    chosen = cfg.backend.get("rows", "all") == "on_demand"
    estimate = estimate_memory(
        task,
        federation,
        plan,
        num_servers=strategy.num_servers,
        aggregator=aggregator,
        rounds=cfg.rounds,
        eval_nodes=cfg.eval_nodes,
        private=privacy is not None and privacy.per_example_gradients,
        messages=messages,
        vectorise=cfg.backend.get("vectorise", True),
        chunk_size=configured if isinstance(configured, int) else None,
        held_rows=on_demand if chosen else None,
        rows_on_demand=None if chosen else on_demand,
    )
    estimate = with_resident_memory(estimate, device)
    budget = memory_budget(device) if configured == "auto" else None
    if budget is not None:
        estimate = estimate.with_chunk_size(choose_chunk_size(estimate, budget))
    return estimate


def _check_population(cfg: DictConfig, messages: MessageTransforms) -> None:
    """A population's clients are derived on demand: nothing may read all of them."""
    check(
        not any(isinstance(step, Attack) and step.poisons_data for step in messages.chain),
        f"attack={_choice(cfg.attack)} poisons its nodes' data, which a population "
        f"(partition={_choice(cfg.partition)}) derives per client on demand; use a partition "
        "that is not population_*",
    )
    check(
        not instantiate(cfg.aggregator).weighs_clients,
        f"aggregator={_choice(cfg.aggregator)} weighs clients by their label histograms, which "
        f"a population (partition={_choice(cfg.partition)}) does not build; use a partition "
        "that is not population_*",
    )


def _rows_on_demand(strategy: Strategy, federation: Federation) -> int | None:
    """The rows a backend with ``backend.rows=on_demand`` holds at once: round 0's and the
    nodes the strategy keeps after it, and the servers' (None: the strategy keeps every
    node's row)."""
    planner = copy.deepcopy(strategy)
    if planner.held_nodes() is None:
        return None
    used = rows_used(planner.plan(0, federation))
    kept = planner.held_nodes()
    nodes = np.union1d(used[used < federation.num_nodes], kept)
    return len(nodes) + strategy.num_servers


def _partitioned(partition: Any, dataset: Any, topology: Topology | None, cfg: DictConfig) -> Any:
    """The partition's node data; one that cannot be allocated (a population of 10^12
    clients' sizes) is refused in one line."""
    try:
        return partition(**_partition_inputs(partition, dataset, topology, cfg))
    except (RuntimeError, MemoryError) as error:
        reason = allocation_failure(error)
        if reason is None:
            raise
        raise ConfigError(
            f"partition={_choice(cfg.partition)} with num_nodes={cfg.num_nodes} needs more "
            f"memory than exists ({reason})"
        ) from None


def _partition_inputs(
    partition: Any, dataset: Any, topology: Topology | None, cfg: DictConfig
) -> dict:
    """A partitioner's arguments: labels, sizes, seed (``partition.seed``, else the run's), and
    owners or components if it takes them."""
    seed = cfg.seed if cfg.partition.get("seed") is None else cfg.partition.seed
    check(seed >= 0, f"partition.seed={seed} must be >= 0 (or null: the run's seed)")
    inputs: dict[str, Any] = {
        "labels": dataset.train_y.numpy(),
        "num_nodes": cfg.num_nodes,
        "seed": seed,
    }
    parameters = inspect.signature(partition).parameters
    if "owners" in parameters:
        check(
            dataset.train_owners is not None,
            f"partition=natural needs a data set with a natural split (e.g. femnist, synthetic), "
            f"not data={dataset.name}",
        )
        inputs["owners"] = np.asarray(dataset.train_owners)
    if "components" in parameters:
        inputs["components"] = topology.components()
    return inputs


def _choice(node: DictConfig) -> str:
    return str(node._target_).rsplit(".", 1)[-1]


def instantiate(node: DictConfig, **overrides: Any) -> Any:
    """Hydra's ``instantiate`` (``overrides`` replace settings of ``node``), passing a
    :class:`ConfigError` of the target through unwrapped."""
    try:
        return hydra_instantiate(node, **overrides)
    except InstantiationException as error:
        if isinstance(error.__cause__, ConfigError):
            raise error.__cause__ from None
        reason = allocation_failure(error)
        if reason is not None:
            raise ConfigError(
                f"{_choice(node)} with these settings needs more memory than exists ({reason})"
            ) from None
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
