"""Device profiles in FedScale's fields: ms per sample and kbit/s, timed as FedScale does."""

import numpy as np
import pandas as pd
import pytest
from conftest import compose_config

from fedsim.build import build_simulation
from fedsim.errors import ConfigError
from fedsim.metrics.recorder import Recorder
from fedsim.plans import Average, RoundPlan, Train
from fedsim.simulated.clock import Clock
from fedsim.simulated.device_profiles import device_profiles
from fedsim.training.schedule import NodeData


def profiles(tmp_path, text: str) -> str:
    path = tmp_path / "devices.csv"
    path.write_text(text)
    return str(path)


def test_fedscales_completion_time_by_hand(tmp_path):
    """Spec async-fl.md, "what fedsim must be able to show" 3: 50 ms per sample, batch 20, 10
    steps: 3 x 20 x 10 x 50 / 1000 = 30 s of compute; a 1,000 kbit model down and up at 500
    kbit/s: 4 s.  One client of a server, timed by fedsim's clock: 34 s."""
    network = device_profiles(
        1, seed=0, path=profiles(tmp_path, "computation,communication\n50,500\n")
    )
    clock = Clock(
        network, num_rows=2, node_data=NodeData.from_shards([np.arange(300)]), batch_size=20
    )
    client, server = np.array([0]), np.array([1])
    plan = RoundPlan((
        Average(server, client, np.ones(1)),
        Train(client, steps=10),
        Average(client, server, np.ones(1)),
    ))  # fmt: skip
    assert clock.advance(plan, message_bytes=1000 * 125, barrier=False) == pytest.approx(34.0)


def test_rows_go_to_nodes_in_turn_or_by_their_node_column(tmp_path):
    in_turn = device_profiles(
        3, 0, profiles(tmp_path, "computation,communication\n10,80\n20,160\n")
    )
    assert in_turn.seconds_per_unit.tolist() == pytest.approx([0.03, 0.06, 0.03])
    assert in_turn.upload.tolist() == [10_000.0, 20_000.0, 10_000.0]  # bytes per second
    assert in_turn.download.tolist() == in_turn.upload.tolist()
    by_node = profiles(tmp_path, "node,computation,communication\n1,20,160\n0,10,80\n5,1,1\n")
    assert device_profiles(2, 0, by_node).seconds_per_unit.tolist() == pytest.approx([0.03, 0.06])


def test_a_latency_adds_to_every_transfer(tmp_path):
    network = device_profiles(
        2, 0, profiles(tmp_path, "computation,communication\n1,8\n"), latency_s=0.5
    )
    assert network.transfer_times([0], [1], 1000).tolist() == [0.5 + 1.0]  # 1000 B at 1000 B/s


@pytest.mark.parametrize(
    "text, message",
    [
        ("speed,bandwidth\n1,2\n", "must start with the header computation,communication"),
        ("computation,communication\n", "lists no device"),
        (
            "computation,communication\n0,5\n",
            r"line 2: computation='0' must be a finite number > 0",
        ),
        ("computation,communication\n5,fast\n", "communication='fast' must be a finite number > 0"),
        ("computation,communication\n5\n", "line 2: expected 2 cells, got 1"),
        ("node,computation,communication\n0,1,1\n", r"profiles no device for nodes \[1\]"),
        ("node,computation,communication\n0,1,1\n0,2,2\n", "distinct integer ids"),
    ],
)
def test_a_bad_profile_file_is_refused_in_one_line_naming_the_setting(tmp_path, text, message):
    with pytest.raises(ConfigError, match=f"network.path=.*{message}"):
        device_profiles(2, 0, profiles(tmp_path, text))


def test_a_missing_file_is_refused():
    with pytest.raises(ConfigError, match="network.path=/no/such.csv does not exist"):
        device_profiles(2, 0, "/no/such.csv")


def test_a_fedavg_round_lasts_as_long_as_its_slowest_profiled_client(tmp_path):
    """Both clients sampled, 10 steps of 20 examples: the round ends when the slower one's
    download, 3 x 200 x computation ms and upload are done."""
    path = profiles(tmp_path, "computation,communication\n50,500\n20,8000\n")
    config = compose_config(
        "num_nodes=2", "rounds=1", "strategy.sample_size=2", "strategy.local_epochs=null",
        "strategy.local_steps=10", "optimizer.batch_size=20", "network=device_profiles",
        f"network.path={path}",
    )  # fmt: skip
    simulation = build_simulation(config)
    size = simulation.federation.message_bytes
    simulation.run(Recorder(tmp_path / "metrics.parquet"), progress=False)
    rows = pd.read_parquet(tmp_path / "metrics.parquet")
    sim_time = rows.query("metric == 'sim_time_s' and round == 1").value.item()
    expected = max(
        2 * size / (kbps * 125) + 3 * 200 * ms / 1000 for ms, kbps in [(50, 500), (20, 8000)]
    )
    assert sim_time == pytest.approx(expected)
