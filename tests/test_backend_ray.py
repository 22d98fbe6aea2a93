"""The Ray backend runs every strategy's plans to the local backend's numbers, and a dead
actor stops the run with one line naming its shard."""

import logging

import numpy as np
import pandas as pd
import pytest
from conftest import compose_config

from fedsim.backends import ray_backend
from fedsim.build import build_simulation
from fedsim.errors import ConfigError
from fedsim.metrics.recorder import Recorder
from fedsim.runner import precheck, run_job

ray = pytest.importorskip("ray")

STRATEGIES = {
    "fedavg": ["strategy.sample_size=4"],
    "dpsgd": ["topology=regular", "aggregator=variance_corrected", "init=independent"],
    "s2s": ["strategy.num_sampled=4"],
    "s2a": ["strategy.num_sampled=4"],
    "modest": ["strategy.sample_size=4", "strategy.num_aggregators=2"],
    "fl_fixed_server": ["strategy.sample_size=4"],
    "gossip_learning": ["strategy.period_s=30"],
    "gossip": [
        "topology=regular", "aggregator=variance_corrected", "init=independent",
        "strategy.train_every_min=1", "strategy.train_every_max=3",
    ],
}  # fmt: skip


@pytest.fixture(scope="module")
def local_ray():
    """One Ray for the module: loopback only, two CPUs, no dashboard; shut down after."""
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        logging_level=logging.ERROR,
        log_to_driver=False,
    )
    yield
    ray.shutdown()


def metrics(tmp_path, name, *overrides):
    run_dir = tmp_path / name
    run_dir.mkdir()
    config = compose_config("num_nodes=12", "rounds=6", "eval_every=2", *overrides)
    assert run_job(config, run_dir)["status"] == "completed"
    rows = pd.read_parquet(run_dir / "metrics.parquet")
    rows = rows[rows.metric != "wall_time_s"]
    return rows.sort_values(["round", "metric", "node"]).reset_index(drop=True)


@pytest.mark.slow
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_strategy_gives_the_same_metrics_on_ray_and_local(strategy, tmp_path, local_ray):
    settings = [f"strategy={strategy}", *STRATEGIES[strategy]]
    local = metrics(tmp_path, "local", *settings)
    on_ray = metrics(tmp_path, "ray", *settings, "backend=ray", "backend.num_actors=2")
    crossed = on_ray.metric == "bytes_between_actors_total"
    assert on_ray[crossed].value.iloc[-1] > 0  # the simulator's own traffic, kept apart
    on_ray = on_ray[~crossed].reset_index(drop=True)
    pd.testing.assert_frame_equal(local.drop(columns="value"), on_ray.drop(columns="value"))
    assert np.allclose(local.value, on_ray.value, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_private_dpsgd_draws_the_same_noise_on_ray_and_local(tmp_path, local_ray):
    settings = [
        "strategy=dpsgd", "topology=regular", "privacy=decor", "privacy.clip=1",
        "strategy.local_epochs=null", "strategy.local_steps=2",
    ]  # fmt: skip
    local = metrics(tmp_path, "local", *settings)
    on_ray = metrics(tmp_path, "ray", *settings, "backend=ray", "backend.num_actors=2")
    on_ray = on_ray[on_ray.metric != "bytes_between_actors_total"].reset_index(drop=True)
    assert "privacy_epsilon_spent" in set(local.metric)
    pd.testing.assert_frame_equal(local.drop(columns="value"), on_ray.drop(columns="value"))
    assert np.allclose(local.value, on_ray.value, rtol=1e-4, atol=1e-5)


def test_gpus_per_actor_without_a_gpu_is_refused_before_ray_starts(monkeypatch):
    monkeypatch.setattr(ray_backend, "_local_gpus", lambda: 0)  # a machine without CUDA
    with pytest.raises(ConfigError, match="but this machine has no CUDA GPU") as error:
        precheck(["backend=ray", "backend.gpus_per_actor=0.5"])
    assert "\n" not in str(error.value)
    monkeypatch.setattr(ray_backend, "_local_gpus", lambda: 1)  # one GPU: the check passes
    precheck(["backend=ray", "backend.gpus_per_actor=0.5"])


@pytest.mark.slow
def test_a_dead_actor_fails_the_run_naming_its_shard_and_keeps_the_metrics(tmp_path, local_ray):
    simulation = build_simulation(
        compose_config(
            "strategy=dpsgd", "topology=ring", "num_nodes=12", "rounds=6", "eval_every=1",
            "checkpoint_every=2", "backend=ray", "backend.num_actors=2",
        )
    )  # fmt: skip

    def kill_shard_1(state):
        ray.kill(simulation.backend.actors[1])

    recorder = Recorder(tmp_path / "metrics.parquet")
    with pytest.raises(RuntimeError, match=r"Ray actor of shard 1 \(rows .*\) died"):
        simulation.run(recorder, progress=False, checkpoint=kill_shard_1)
    recorder.close()
    rows = pd.read_parquet(tmp_path / "metrics.parquet")
    assert sorted(rows["round"].unique()) == [0, 1, 2]
    simulation.backend.close()


def test_shards_keep_graph_neighbours_together():
    import networkx as nx

    from fedsim.backends.ray_backend import _order
    from fedsim.topology import Topology, metropolis_hastings

    ring = Topology(nx.cycle_graph(40), metropolis_hastings)
    halves = np.array_split(_order(40, ring), 2)
    cut = sum(1 for a, b in nx.cycle_graph(40).edges if (a in halves[0]) != (b in halves[0]))
    assert cut <= 4  # contiguous arcs of the ring: few edges cross the shards
