"""The Ray backend runs every strategy's plans to the local backend's numbers, a local Ray
listens on loopback only, a resumed run counts what an uninterrupted one does, and a dead
actor stops the run with one line naming its shard."""

import copy
import ipaddress
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import compose_config
from helpers import ray_settings, tried_strategies

from fedsim import checkpoint
from fedsim.backends import ray_backend
from fedsim.backends.shard import package_directory
from fedsim.build import build_simulation
from fedsim.config import options
from fedsim.errors import ConfigError, RunError
from fedsim.metrics.recorder import Recorder
from fedsim.runner import job_config, precheck, run_job

ray = pytest.importorskip("ray")

FEDSIM = [sys.executable, "-m", "fedsim.cli"]


def process_tree(root: int) -> set[int]:
    """``root`` and every process below it (Ray's GCS, raylet, agents and workers)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        try:
            stat = Path(f"/proc/{entry}/stat").read_text() if entry.isdigit() else ""
        except OSError:  # gone meanwhile
            continue
        if stat:
            parent = int(stat.rsplit(")", 1)[1].split()[1])  # after "pid (name) state"
            children.setdefault(parent, []).append(int(entry))
    tree, todo = set(), [root]
    while todo:
        tree.add(todo[-1])
        todo += children.get(todo.pop(), [])
    return tree


def listening_addresses(root: int) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket that ``root``'s process tree listens on, from
    /proc/net/tcp and tcp6 (state 0A); an IPv4 address mapped into IPv6 as IPv4."""
    inodes = set()
    for pid in process_tree(root):
        try:
            links = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
        except OSError:  # gone meanwhile
            continue
        inodes |= {link[len("socket:[") : -1] for link in links if link.startswith("socket:[")}
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            _, local, _, state, *_, inode = line.split()[:10]
            if state == "0A" and inode in inodes:
                host, port = local.split(":")
                raw = bytes.fromhex(host)  # 32-bit words, each in the machine's (little) order
                address = ipaddress.ip_address(
                    b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
                )
                mapped = getattr(address, "ipv4_mapped", None)
                found.add((str(mapped or address), int(port, 16)))
    return found


def exposed(addresses: set[tuple[str, int]]) -> set[tuple[str, int]]:
    return {(host, port) for host, port in addresses if not ipaddress.ip_address(host).is_loopback}


@pytest.mark.slow
def test_a_local_ray_and_its_actors_listen_on_loopback_only(tmp_path, local_ray):
    simulation = build_simulation(
        compose_config("num_nodes=12", "rounds=1", "backend=ray", "backend.num_actors=2")
    )
    seen: list[set[tuple[str, int]]] = []
    recorder = Recorder(tmp_path / "metrics.parquet")
    simulation.run(recorder, checkpoint=lambda state: seen.append(listening_addresses(os.getpid())))
    recorder.close()
    simulation.backend.close()
    assert len(seen[0]) >= 5  # GCS, raylet (2), this driver and the two actors
    assert exposed(seen[0]) == set()


def metrics(tmp_path, name, *overrides):
    run_dir = tmp_path / name
    run_dir.mkdir()
    config = compose_config("num_nodes=12", "rounds=6", "eval_every=2", *overrides)
    assert run_job(config, run_dir)["status"] == "completed"
    return metrics_of(run_dir)


def metrics_of(run_dir):
    rows = pd.read_parquet(run_dir / "metrics.parquet")
    rows = rows[rows.metric != "wall_time_s"]
    return rows.sort_values(["round", "metric", "node"]).reset_index(drop=True)


@pytest.mark.slow
@pytest.mark.parametrize("strategy", options("strategy"))
def test_every_strategy_gives_the_same_metrics_on_ray_and_local(strategy, tmp_path, local_ray):
    """Every option of the strategy group, with its YAML's ``# ray:`` (else ``# smoke:``) line."""
    assert_same_on_ray(tmp_path, f"strategy={strategy}", *ray_settings("strategy", strategy))


@pytest.mark.slow
@pytest.mark.parametrize(
    "aggregator, strategy",
    [(name, strategy) for name in options("aggregator") if name != "mean"
     for strategy in tried_strategies(ray_settings("aggregator", name), ["fedavg", "dpsgd"])],
)  # fmt: skip
def test_every_aggregator_gives_the_same_metrics_on_ray_and_local(
    aggregator, strategy, tmp_path, local_ray
):
    """Every option of the aggregator group (the mean is every strategy's above), at an FL
    server and in gossip (or in the one its settings name), with its YAML's ``# ray:``
    (else ``# smoke:``) line."""
    settings = [f"aggregator={aggregator}", *ray_settings("aggregator", aggregator)]
    assert_same_on_ray(tmp_path, f"strategy={strategy}", "rounds=2", *settings)


@pytest.mark.slow
@pytest.mark.parametrize(
    "strategy, group, option",
    [(strategy, group, name) for group in ("attack", "compression") for name in options(group)
     if name != "none"
     for strategy in tried_strategies(ray_settings(group, name), ["fedavg", "dpsgd"])],
)  # fmt: skip
def test_every_attack_and_compressor_gives_the_same_metrics_on_ray_and_local(
    group, option, strategy, tmp_path, local_ray
):
    """Every option of the attack and compression groups, on uploads (FL) and in gossip
    (or in the one its settings name), with its YAML's ``# ray:`` (else ``# smoke:``) line;
    error feedback where it has it."""
    settings = [f"{group}={option}", *ray_settings(group, option)]
    if group == "compression":
        settings.append("compression.error_feedback=true")
    fl = ["strategy.sample_size=6"] if strategy == "fedavg" else ["topology=regular"]
    assert_same_on_ray(tmp_path, f"strategy={strategy}", "rounds=3", *fl, *settings)


def assert_same_on_ray(tmp_path, *settings):
    """The metrics of a run on two Ray actors equal the local backend's (to float32 sums'
    rounding), besides the bytes that crossed between actors."""
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


@pytest.mark.slow
def test_rqm_uplinks_draw_the_same_coins_on_ray_and_local(tmp_path, local_ray):
    """Each client's own quantisation coins, the bytes of its quantised uploads and the
    epsilon spent, on two actors as on the local backend."""
    settings = ["strategy=fedavg", "strategy.sample_size=6", "privacy=rqm", "rounds=3"]
    local = metrics(tmp_path, "local", *settings)
    on_ray = metrics(tmp_path, "ray", *settings, "backend=ray", "backend.num_actors=2")
    on_ray = on_ray[on_ray.metric != "bytes_between_actors_total"].reset_index(drop=True)
    assert {"privacy_epsilon_spent", "bytes_uplink_total"} <= set(local.metric)
    pd.testing.assert_frame_equal(local.drop(columns="value"), on_ray.drop(columns="value"))
    assert np.allclose(local.value, on_ray.value, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_non_finite_parameters_on_a_shard_end_the_run_as_diverged(tmp_path, local_ray):
    settings = [
        "num_nodes=6", "rounds=8", "eval_every=4", "strategy.sample_size=3",
        "optimizer.lr=1e30", "backend=ray", "backend.num_actors=2",
    ]  # fmt: skip
    with pytest.warns(UserWarning, match="non-finite parameters after round 1"):
        summary = run_job(compose_config(*settings), tmp_path)
    assert summary["status"] == "diverged" and summary["rounds_completed"] == 1


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
    with pytest.raises(RunError, match=r"Ray actor of shard 1 \(rows .*\) died") as error:
        simulation.run(recorder, progress=False, checkpoint=kill_shard_1)
    assert "\n" not in str(error.value)
    recorder.close()
    rows = pd.read_parquet(tmp_path / "metrics.parquet")
    assert sorted(rows["round"].unique()) == [0, 1, 2]
    simulation.backend.close()


class Crash(Exception):
    """A run stopped right after a checkpoint, as by a power cut."""


@pytest.mark.slow
@pytest.mark.parametrize("backend", [["backend=ray", "backend.num_actors=2"], ["backend=local"]])
def test_a_resumed_run_records_what_an_uninterrupted_one_does(tmp_path, local_ray, backend):
    settings = [
        "strategy=dpsgd", "topology=regular", "aggregator=variance_corrected",
        "init=independent", "checkpoint_every=3", *backend,
    ]  # fmt: skip
    whole = metrics(tmp_path, "whole", *settings)
    run_dir = tmp_path / "resumed"
    run_dir.mkdir()
    config = compose_config("num_nodes=12", "rounds=6", "eval_every=2", *settings)
    simulation = build_simulation(config)

    def save_and_crash(state):  # after round 3: its correction factors are not reported yet
        checkpoint.save(run_dir, {**state, "config": job_config(config)})  # as run_job does
        raise Crash

    recorder = Recorder(run_dir / "metrics.parquet")
    with pytest.raises(Crash):
        simulation.run(recorder, progress=False, checkpoint=save_and_crash)
    recorder.close()
    simulation.backend.close()
    config.resume = True
    assert run_job(config, run_dir)["status"] == "completed"
    resumed = metrics_of(run_dir)
    crossed = resumed.query("metric == 'bytes_between_actors_total'")
    assert len(crossed) == (4 if "backend=ray" in backend else 0)
    assert crossed.value.is_monotonic_increasing
    assert "correction_factor_1.weight" in set(resumed.metric)
    pd.testing.assert_frame_equal(resumed, whole)


@pytest.mark.slow
@pytest.mark.parametrize(
    "settings",
    [["strategy=fedavg"], ["strategy=fedbuff"],
     ["data=synthetic", "partition=population_synthetic"]],
)  # fmt: skip
def test_rows_on_demand_give_the_same_metrics_on_ray_and_local(settings, tmp_path, local_ray):
    """FedAvg and FedBuff, and a population whose clients' examples the actors generate."""
    assert_same_on_ray(tmp_path, *settings, "backend.rows=on_demand")


def recorded(path, overrides, resume=None):
    """The metrics (after round 3, not the wall clock or the simulator's own traffic) and
    the checkpoints of a run, resumed from ``resume`` where given."""
    simulation, states = build_simulation(compose_config(*overrides)), []
    recorder = Recorder(path)
    simulation.run(recorder, progress=False, checkpoint=states.append, resume=resume)
    recorder.close()
    simulation.backend.close()
    rows = pd.read_parquet(path).query("round > 3 and metric != 'wall_time_s'")
    rows = rows[~rows.metric.str.startswith("bytes_between")]
    return rows.reset_index(drop=True), states


@pytest.mark.slow
def test_rows_on_demand_resume_from_the_shards_held_rows_on_ray_or_locally(tmp_path, local_ray):
    """A checkpoint of the shards' held rows (clients in flight among them) resumes on Ray
    and on the local backend, recording what the uninterrupted run does."""
    settings = ["num_nodes=12", "strategy=fedbuff", "backend.rows=on_demand", "rounds=6",
                "eval_every=2", "checkpoint_every=3"]  # fmt: skip
    on_ray = ["backend=ray", "backend.num_actors=2"]
    whole, states = recorded(tmp_path / "whole.parquet", [*settings, *on_ray])
    saved = states[0]
    assert saved["rounds_completed"] == 3 and len(saved["backend"]["pool"]["kept"])
    for backend in (on_ray, []):
        resume = copy.deepcopy(saved)  # a run empties the state it resumes from
        resumed, _ = recorded(tmp_path / f"{len(backend)}.parquet", [*settings, *backend], resume)
        pd.testing.assert_frame_equal(resumed, whole, rtol=1e-4)


@pytest.mark.slow
def test_adam_states_and_local_step_counts_are_gathered_and_handed_back(tmp_path, local_ray):
    """Adam's moments and step counts and each row's local steps (a schedule by local step)
    live on the shards: a run resumed from a checkpoint on Ray records what an uninterrupted
    one does, which records what the local backend does."""
    settings = [
        "strategy=dpsgd", "topology=regular", "optimizer=adam", "lr_schedule=exponential",
        "lr_schedule.gamma=0.9", "lr_schedule.by=local_step", "checkpoint_every=3",
    ]  # fmt: skip
    on_ray = [*settings, "backend=ray", "backend.num_actors=2"]
    local = metrics(tmp_path, "local", *settings)
    whole = metrics(tmp_path, "whole", *on_ray)
    run_dir = tmp_path / "resumed"
    run_dir.mkdir()
    config = compose_config("num_nodes=12", "rounds=6", "eval_every=2", *on_ray)
    simulation = build_simulation(config)

    def save_and_crash(state):
        assert set(state["backend"]["optimizer"]) == {"exp_avg", "exp_avg_sq", "step"}
        assert state["backend"]["local_steps"].min() > 0
        checkpoint.save(run_dir, {**state, "config": job_config(config)})
        raise Crash

    recorder = Recorder(run_dir / "metrics.parquet")
    with pytest.raises(Crash):
        simulation.run(recorder, progress=False, checkpoint=save_and_crash)
    recorder.close()
    simulation.backend.close()
    config.resume = True
    assert run_job(config, run_dir)["status"] == "completed"
    pd.testing.assert_frame_equal(metrics_of(run_dir), whole)
    whole = whole[whole.metric != "bytes_between_actors_total"].reset_index(drop=True)
    pd.testing.assert_frame_equal(local.drop(columns="value"), whole.drop(columns="value"))
    assert np.allclose(local.value, whole.value, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_a_run_on_its_own_ray_listens_on_loopback_only_and_a_dead_actor_ends_it_in_one_line(
    tmp_path,
):
    run_dir = tmp_path / "run"
    settings = [
        "strategy=dpsgd", "topology=ring", "num_nodes=12", "rounds=1000", "eval_every=5",
        "checkpoint_every=2", "backend=ray", "backend.num_actors=2", "progress=false",
    ]  # fmt: skip
    addresses: set[tuple[str, int]] = set()
    with open(tmp_path / "stderr", "w") as stderr:
        process = subprocess.Popen(
            [*FEDSIM, "run", *settings, f"hydra.run.dir={run_dir}"],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
        try:
            deadline = time.monotonic() + 120
            while not checkpoint.exists(run_dir):  # Ray, both actors and two rounds are up
                assert process.poll() is None and time.monotonic() < deadline, "no checkpoint"
                addresses |= listening_addresses(process.pid)
                time.sleep(0.1)
            addresses |= listening_addresses(process.pid)
            actor = next(pid for pid in process_tree(process.pid) if "ray::Shard" in command(pid))
            os.kill(actor, signal.SIGKILL)
            assert process.wait(timeout=60) == 1
        finally:
            process.kill()  # only if a check above failed first
    assert len(addresses) >= 5  # GCS, raylet (2), the driver and the two actors
    assert exposed(addresses) == set()
    error = (tmp_path / "stderr").read_text()
    assert error.startswith("fedsim: error: Ray actor of shard "), error
    assert error.count("\n") == 1 and "HYDRA_FULL_ERROR" not in error


@pytest.mark.slow
def test_a_run_whose_actors_would_import_another_fedsim_is_refused_in_one_line(tmp_path):
    """Ray puts the current directory first on its workers' path: started in another
    checkout, the actors would train with its code while this process evaluates with its own
    (how the parity tests failed in a fresh clone whose pytest imported the main checkout)."""
    shutil.copytree(
        Path(package_directory()), tmp_path / "fedsim", ignore=shutil.ignore_patterns("__pycache__")
    )
    done = subprocess.run(
        [
            Path(sys.executable).with_name("fedsim"), "run", "num_nodes=4", "rounds=1",
            "strategy.sample_size=2", "backend=ray", "backend.num_actors=2", "progress=false",
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr[-2000:]
    assert done.stderr.startswith(
        f"fedsim: error: Ray's workers import fedsim from {tmp_path.resolve() / 'fedsim'} "
    ), done.stderr[-2000:]
    assert done.stderr.count("\n") == 1


def command(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text()
    except OSError:  # gone meanwhile
        return ""


def test_shards_keep_graph_neighbours_together():
    import networkx as nx

    from fedsim.backends.ray_backend import _order
    from fedsim.topology import Topology, metropolis_hastings

    ring = Topology(nx.cycle_graph(40), metropolis_hastings)
    halves = np.array_split(_order(40, ring), 2)
    cut = sum(1 for a, b in nx.cycle_graph(40).edges if (a in halves[0]) != (b in halves[0]))
    assert cut <= 4  # contiguous arcs of the ring: few edges cross the shards
