import math
import re

import numpy as np
import pytest

from fedsim.errors import ConfigError
from fedsim.simulated.network import Network, network

MB = 125_000.0  # bytes per second in one megabit per second


def three_nodes(upload=8.0, download=8.0, latency=0.5):
    """Three nodes at one site, links of `latency` s, 8 bytes/s both ways unless told."""
    return Network(
        seconds_per_unit=np.array([1.0, 2.0, 4.0]),
        unit="sample",
        site_latency=np.array([[latency]]),
        node_site=np.zeros(3, dtype=np.int64),
        access_latency=np.zeros(3),
        upload=np.full(3, upload),
        download=np.full(3, download),
    )


def test_compute_time_counts_samples_or_steps():
    net = three_nodes()
    assert net.num_nodes == 3
    assert net.compute_time([0, 2], samples=[10, 10], steps=[1, 1]).tolist() == [10.0, 40.0]
    by_step = network(3, 0, unit="step", seconds_per_unit=0.5)
    assert by_step.compute_time([1], samples=[100], steps=[3]).tolist() == [1.5]


def test_latency_is_zero_to_oneself():
    assert three_nodes().latency([0, 1, 2], [1, 1, 0]).tolist() == [0.5, 0.0, 0.5]


def test_one_transfer_is_latency_plus_bytes_over_bandwidth():
    assert three_nodes().transfer_times([0], [1], 16).tolist() == [0.5 + 16 / 8]


def test_transfers_from_one_sender_share_its_upload():
    times = three_nodes().transfer_times([0, 0], [1, 2], 16)
    assert times.tolist() == [0.5 + 2 * 16 / 8] * 2


def test_transfers_to_one_receiver_share_its_download():
    net = three_nodes(upload=100.0, download=8.0)
    assert net.transfer_times([1, 2], [0, 0], [8, 16]).tolist() == [0.5 + 2, 0.5 + 4]


def test_self_transfers_take_nothing_and_share_nothing():
    times = three_nodes().transfer_times([0, 0], [0, 1], 16)
    assert times.tolist() == [0.0, 0.5 + 16 / 8]


def test_infinite_bandwidth_leaves_pure_latency():
    net = network(3, 0, latency_s=0.05, upload_mbps=math.inf, download_mbps=math.inf)
    assert net.transfer_times([0, 0, 1], [1, 2, 2], 10**9).tolist() == [0.05] * 3


def test_round_trip_is_both_ways_of_one_transfer():
    net = three_nodes(upload=8.0, download=4.0)
    assert net.round_trip([0, 1], [1, 1], 8).tolist() == [2 * 0.5 + 2 * 8 / 4, 0.0]


def test_megabits_become_bytes_per_second():
    net = network(2, 0, upload_mbps=8.0, download_mbps=16.0)
    assert net.upload.tolist() == [8 * MB] * 2 and net.download.tolist() == [16 * MB] * 2
    assert net.transfer_times([0], [1], 8 * MB).tolist() == [0.05 + 1.0]


def test_constant_network_defaults():
    net = network(4, 0)
    assert net.seconds_per_unit.tolist() == [0.001] * 4 and net.unit == "sample"
    assert net.latency([0, 1], [3, 2]).tolist() == [0.05, 0.05]


def test_lognormal_compute_has_the_median_and_is_seeded():
    speeds = network(2001, 7, compute="lognormal", seconds_per_unit=0.01).seconds_per_unit
    assert np.median(speeds) == pytest.approx(0.01, rel=0.1)
    assert speeds.std() > 0
    again = network(2001, 7, compute="lognormal", seconds_per_unit=0.01).seconds_per_unit
    other = network(2001, 8, compute="lognormal", seconds_per_unit=0.01).seconds_per_unit
    assert np.array_equal(speeds, again) and not np.array_equal(speeds, other)


def test_compute_file_repeats_its_lines(tmp_path):
    path = tmp_path / "speeds.txt"
    path.write_text("# seconds per sample\n0.1\n\n0.3\n")
    net = network(5, 0, compute="file", compute_file=str(path))
    assert net.seconds_per_unit.tolist() == [0.1, 0.3, 0.1, 0.3, 0.1]


def test_drawn_latency_adds_the_access_latency_of_both_ends():
    net = network(1000, 3, latency="drawn", latency_s=0.1)
    access = net.access_latency
    assert np.all((access >= 0) & (access < 0.1)) and access.mean() == pytest.approx(0.05, rel=0.1)
    assert net.latency([0], [1]).tolist() == [access[0] + access[1]]
    assert np.array_equal(access, network(1000, 3, latency="drawn", latency_s=0.1).access_latency)


def test_latency_file_in_milliseconds_maps_node_i_to_site_i_mod_k(tmp_path):
    path = tmp_path / "latencies.txt"
    path.write_text("0 10 20\n10, 0, 30\n20 30 0\n")
    net = network(5, 0, latency="file", latency_file=str(path))
    assert net.node_site.tolist() == [0, 1, 2, 0, 1]
    assert net.latency([0, 1, 3, 0], [2, 2, 1, 3]).tolist() == [0.02, 0.03, 0.01, 0.0]


def test_networks_are_frozen():
    net = network(2, 0)
    with pytest.raises(ValueError, match="read-only"):
        net.upload[0] = 1.0


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"compute": "gamma"}, "network.compute=gamma is not one of: constant, lognormal, file"),
        ({"latency": "far"}, "network.latency=far is not one of: constant, drawn, file"),
        ({"unit": "epoch"}, "network.unit=epoch is not one of: sample, step"),
        ({"seconds_per_unit": -1.0}, "network.seconds_per_unit=-1.0 must be a finite number >= 0"),
        ({"compute_sigma": math.nan}, "network.compute_sigma=nan must be a finite number >= 0"),
        ({"latency_s": -0.1}, "network.latency_s=-0.1 must be a finite number >= 0"),
        ({"upload_mbps": 0.0}, r"network.upload_mbps=0.0 must be > 0 \(inf for unlimited\)"),
        ({"download_mbps": -5.0}, "network.download_mbps=-5.0 must be > 0"),
        ({"compute": "file"}, "network.compute=file needs network.compute_file=PATH"),
        ({"latency": "file"}, "network.latency=file needs network.latency_file=PATH"),
        ({"compute_file": "x"}, "network.compute_file=x is only read with network.compute=file"),
        ({"latency_file": "x"}, "network.latency_file=x is only read with network.latency=file"),
        ({"compute": "file", "compute_file": "/no"}, "network.compute_file=/no does not exist"),
    ],
)
def test_bad_settings_name_the_setting(settings, message):
    with pytest.raises(ConfigError, match=message):
        network(4, 0, **settings)


@pytest.mark.parametrize(
    "setting, text, message",
    [
        ("compute_file", "# nothing\n\n", "expected lines of numbers, found none"),
        ("compute_file", "0.1\nfast\n", "line 2: expected numbers .*, found 'fast'"),
        ("compute_file", "0.1 0.2\n", "must hold one number per line"),
        ("compute_file", "-0.1\n", "line 1: '-0.1' must hold finite numbers >= 0"),
        ("latency_file", "0 1\n1 0\n2 2\n", "must be a square matrix, but it has 3 rows"),
        ("latency_file", "0 inf\ninf 0\n", "line 1: '0 inf' must hold finite numbers >= 0"),
    ],
)
def test_bad_files_name_the_setting_and_the_line(tmp_path, setting, text, message):
    path = tmp_path / "bad.txt"
    path.write_text(text)
    mode = setting.removesuffix("_file")
    with pytest.raises(ConfigError, match=f"network.{setting}={re.escape(str(path))}.*{message}"):
        network(4, 0, **{mode: "file", setting: str(path)})
