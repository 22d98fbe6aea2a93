"""The message seam: what a row sends is rewritten on the way (an attack, then a compressor),
uploads as updates of the server's model, every step kind alike, wire sizes counted; every
option of the attack and compression groups runs and resumes bit for bit (and runs on Ray as
locally: tests/test_backend_ray.py)."""

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
from conftest import compose_config
from helpers import (
    path_federation,
    smoke_settings,
    started_backend,
    tried_strategies,
    whole_and_resumed,
    zero_logreg_task,
)

from fedsim import rng
from fedsim.aggregators.median import Median
from fedsim.attacks.sign_flip import SignFlip
from fedsim.build import build_simulation
from fedsim.compression.base import kept_count
from fedsim.compression.topk import TopK
from fedsim.config import options
from fedsim.errors import ConfigError
from fedsim.messages import MessageTransforms, Outgoing
from fedsim.metrics.recorder import Recorder
from fedsim.plans import Gossip, Merge, Push, RoundPlan
from fedsim.runner import run_job
from fedsim.strategies import FedAvg

W = sp.csr_array(np.array([[2, 1, 0], [1, 1, 1], [0, 1, 2]]) / 3)  # the path 0 - 1 - 2
MODELS = torch.tensor(
    [[1.0, -4.0, 0.5, 0, 0, 0], [2.0, 3.0, -1.0, 0, 0, 0], [0.0, 1.0, 7.0, 0, 0, 0]]
)


def attacked_and_compressed(*nodes: int, k: int = 1) -> MessageTransforms:
    attack = SignFlip(scale=2.0, nodes=list(nodes))
    attack.prepare(num_nodes=3, seed=0)
    return MessageTransforms.of([attack, TopK(ratio=None, k=k)])


def outgoing(*senders: int, link: str = "uplink") -> Outgoing:
    return Outgoing(np.array(senders), link, round_idx=0, seed=0, num_nodes=3)


def test_an_upload_arrives_as_the_servers_model_plus_the_rewritten_update():
    """Client 0 attacks: its update (1, -1) becomes (-2, 2), then top-1 keeps -2."""
    sent = torch.tensor([[2.0, 0.0], [1.0, 3.0]])
    reference = torch.tensor([[1.0, 1.0]]).expand(2, 2)
    received = attacked_and_compressed(0).apply(sent, outgoing(0, 1), reference)
    assert received.tolist() == [[-1.0, 1.0], [1.0, 3.0]]  # (1, 1) + (-2, 0); (1, 1) + (0, 2)


def test_a_gossip_model_is_rewritten_itself_and_downlinks_pass_untouched():
    transforms = attacked_and_compressed(1)
    assert transforms.apply(MODELS[:2], outgoing(0, 1, link="d2d"))[:, :3].tolist() == [
        [0.0, -4.0, 0.0],
        [0.0, -6.0, 0.0],
    ]
    assert transforms.apply(MODELS, outgoing(3, 3, 3, link="downlink")) is MODELS


def test_error_feedback_delays_what_an_encoding_loses_and_loses_nothing():
    """Top-1 with memory: after any number of messages, sent plus residual = what was meant."""
    transforms = MessageTransforms.of([TopK(ratio=None, k=1, error_feedback=True)])
    (name,) = transforms.slot_names()
    states = {name: torch.zeros(3, 3, dtype=torch.float64)}
    updates = torch.tensor([[3.0, 2.0, 1.0], [0.5, -1.0, 0.25]], dtype=torch.float64)
    total = torch.zeros(2, 3, dtype=torch.float64)
    for _ in range(4):
        message = outgoing(0, 2, link="d2d")
        message.slots = {name: states[name][[0, 2]]}
        total += transforms.apply(updates, message)
        states[name][[0, 2]] = message.slots[name]
    # sent (3, 0, 0), (0, 4, 0), (6, 0, 0), (0, 4, 0) (a tie of 4s: the lower index); kept (3, 0, 4)
    assert total[0].tolist() == [9.0, 8.0, 0.0]
    torch.testing.assert_close(total + states[name][[0, 2]], 4 * updates, rtol=0, atol=0)
    assert states[name][1].abs().sum() == 0  # row 1 sent nothing


def test_wire_sizes_follow_the_last_encoding_and_keep_the_header():
    transforms = attacked_and_compressed(0, k=10)
    assert transforms.wire_bytes("uplink", 4_000 + 16, 1_000) == 10 * 8 + 16
    assert transforms.wire_bytes("downlink", 4_016, 1_000) == 4_016
    assert TopK(ratio=0.01, indices="packed").wire_bytes(10**6) == 10**4 * 4 + 10**4 * 20 // 8
    assert MessageTransforms.of([SignFlip()]).wire_bytes("d2d", 4_000, 1_000) == 4_000


def test_fedavg_averages_the_uploads_as_they_arrive():
    """One FedAvg round, client 0 attacking: the server's model is the weighted mean of the
    clients' models with client 0's update from the server's model flipped and doubled."""
    task = zero_logreg_task(lr=0.5)
    backend = started_backend(task, num_rows=4)
    attack = SignFlip(scale=2.0, nodes=[0])
    attack.prepare(3, 0)
    backend.start(task, 4, messages=MessageTransforms.of([attack]))
    broadcast, train, average = FedAvg(sample_size=3).plan(0, path_federation(task)).steps
    backend.execute(RoundPlan((broadcast, train)), round_idx=0)
    server, clients = backend.params[3].clone(), backend.params[:3].clone()
    clients[0] = server - 2 * (clients[0] - server)
    backend.execute(RoundPlan((average,)), round_idx=0)
    weights = torch.tensor([1.0, 1.0, 2.0]) / 4  # by examples held
    torch.testing.assert_close(backend.params[3], weights @ clients)


@pytest.mark.parametrize("aggregator", [None, Median()], ids=["mean", "median"])
def test_gossip_mixes_the_received_models_as_rewritten_and_each_own_model_as_it_is(aggregator):
    task = zero_logreg_task()
    backend = started_backend(task, num_rows=3)
    backend.start(task, 3, aggregator, messages=attacked_and_compressed(1))
    backend.params.copy_(MODELS)
    backend.execute(RoundPlan((Gossip(W),)), round_idx=0)
    sent = torch.stack(
        [torch.tensor([0, -4.0, 0]), torch.tensor([0, -6.0, 0]), torch.tensor([0, 0, 7.0])]
    )
    own = MODELS[:, :3]
    expected = []
    for i in range(3):
        neighbours = [j for j in range(3) if W[i, j] and j != i]
        if aggregator is None:
            expected.append(W[i, i] * own[i] + sum(W[i, j] * sent[j] for j in neighbours))
        else:
            received = np.stack([own[i].numpy(), *(sent[j].numpy() for j in neighbours)])
            expected.append(torch.from_numpy(np.median(received, axis=0)))
    torch.testing.assert_close(backend.params[:, :3], torch.stack(expected).float())


def test_pushed_models_are_buffered_as_rewritten():
    task = zero_logreg_task()
    backend = started_backend(task, num_rows=3)
    backend.start(task, 3, messages=attacked_and_compressed(0))
    backend.params.copy_(MODELS)
    push = Push(np.array([0, 2]), np.array([1, 1]), np.array([1.0, 1.0]))
    backend.execute(RoundPlan((push, Merge(np.array([1]), np.array([0.5])))), round_idx=0)
    # node 0 sends top-1 of (-2, 8, -1) = (0, 8, 0); node 2 sends (0, 0, 7)
    assert backend.params[1, :3].tolist() == [1.0, 3.5, 1.25]


def test_a_compressed_runs_counts_its_uploads_as_encoded_and_its_downloads_dense(tmp_path):
    config = compose_config(
        "num_nodes=12", "rounds=2", "strategy.sample_size=3", "header_bytes=16",
        "compression=topk", "compression.ratio=null", "compression.k=50",
    )  # fmt: skip
    simulation = build_simulation(config)
    dense = simulation.federation.message_bytes
    assert simulation.federation.bytes_on("uplink") == 50 * 8 + 16
    assert simulation.federation.bytes_on("downlink") == dense
    simulation.run(Recorder(tmp_path / "metrics.parquet"), progress=False)
    rows = pd.read_parquet(tmp_path / "metrics.parquet").query("round == 2")
    value = rows.set_index("metric").value
    assert value["bytes_uplink_total"] == 2 * 3 * (50 * 8 + 16)
    assert value["bytes_downlink_total"] == 2 * 3 * dense
    assert value["compression_ratio"] == pytest.approx((50 * 8 + 16 + dense) / (2 * dense))
    assert 0 < value["compression_error"] < 1


MESSAGE_OPTIONS = [
    (group, option, strategy)
    for group in ("attack", "compression") for option in options(group) if option != "none"
    for strategy in tried_strategies(smoke_settings(group, option), ["fedavg", "dpsgd"])
]  # fmt: skip


@pytest.mark.parametrize("group, option, strategy", MESSAGE_OPTIONS)
def test_every_attack_and_compressor_runs_and_resumes_bit_for_bit(
    tmp_path, group, option, strategy
):
    """Every option of both groups (its YAML's ``# smoke:`` line), in FL and in gossip
    (or in the one its smoke line names), resumed after round 1, between two evaluations
    (a compressor's error sums carried)."""
    config = compose_config(
        "num_nodes=12", "rounds=4", "eval_every=2", "checkpoint_every=1", f"strategy={strategy}",
        "strategy.sample_size=6" if strategy == "fedavg" else "topology=ring",
        f"{group}={option}", *smoke_settings(group, option),
    )  # fmt: skip
    first, second = whole_and_resumed(config, tmp_path, killed_after=1)
    assert np.isfinite(first.query("metric == 'loss'").value).all()
    pd.testing.assert_frame_equal(first, second)


@pytest.mark.parametrize(
    "override, message",
    [
        ("attack.nodes=[0,12]", r"attack.nodes=\[0, 12\] must be distinct node ids in 0..11"),
        ("attack.fraction=1.0", r"attack.fraction=1.0 must be in \[0, 1\)"),
    ],
)
def test_bad_attackers_are_refused_in_one_line(override, message):
    config = compose_config("num_nodes=12", "attack=sign_flip", override)
    with pytest.raises(ConfigError, match=message):
        build_simulation(config)


def test_the_attackers_are_a_fraction_of_the_nodes_fixed_by_the_seed():
    drawn = []
    for seed in (0, 0, 1):
        attack = SignFlip(fraction=0.25)
        attack.prepare(num_nodes=12, seed=seed)
        drawn.append(attack.byzantine.tolist())
    assert len(drawn[0]) == 3 and drawn[0] == drawn[1] != drawn[2]


def test_attackers_are_left_out_of_every_metric(tmp_path):
    """Gossip with two sign flippers: the evaluated nodes, the consensus distance and the
    nodes' average (the global model) are the honest nodes' only; the summary names the
    attackers and per-node rows mark them."""
    config = compose_config(
        "num_nodes=12", "rounds=2", "eval_every=1", "strategy=dpsgd", "topology=ring",
        "attack=sign_flip", "attack.nodes=[0,5]",
    )  # fmt: skip
    summary = run_job(config, tmp_path)
    assert summary["attackers"] == [0, 5]
    rows = pd.read_parquet(tmp_path / "metrics.parquet")
    assert set(rows.query("metric == 'node_accuracy'").node) == set(range(12)) - {0, 5}
    node_mean = rows.query("metric == 'node_accuracy_mean'").value.tolist()
    assert rows.query("metric == 'honest_node_accuracy_mean'").value.tolist() == node_mean
    marked = rows.query("metric == 'byzantine'")  # once, in the first evaluation's rows
    assert (
        marked.node.tolist() == [0, 5] and set(marked["round"]) == {0} and (marked.value == 1).all()
    )
    simulation = build_simulation(config)
    simulation.run(Recorder(tmp_path / "again.parquet"), progress=False)
    honest = np.setdiff1d(np.arange(12), [0, 5])
    models = simulation.backend.params[honest]
    torch.testing.assert_close(simulation.global_model(), models.mean(dim=0))
    final = rows.query("metric == 'consensus_distance' and round == 2").value.item()
    distance = (models - models.mean(dim=0)).square().sum(dim=1).mean().item()
    assert final == pytest.approx(distance, rel=1e-5)


def test_a_senders_randomness_is_its_own_and_new_in_every_step_of_a_round():
    def draws(senders, step=0, round_idx=0):
        message = Outgoing(np.array(senders), "d2d", round_idx, seed=0, num_nodes=3, step=step)
        return message.uniform(rng.COMPRESSION, 5, torch.device("cpu"))

    alone, together = draws([2]), draws([0, 2])
    assert torch.equal(alone[0], together[1])  # whoever else sends in the same batch
    assert not torch.equal(draws([2], step=1)[0], alone[0])  # a second step of the round
    assert not torch.equal(draws([2], round_idx=1)[0], alone[0])


def test_a_sparsifier_keeps_the_share_it_is_given_despite_float_rounding():
    assert [kept_count(100, ratio, None) for ratio in (0.07, 0.14, 0.28, 0.55, 0.56)] == [
        7, 14, 28, 55, 56,
    ]  # fmt: skip
    assert kept_count(100, 0.071, None) == 8 and kept_count(100, 0.001, None) == 1


def test_a_compressor_reports_its_mean_relative_error_since_the_last_evaluation():
    top1 = TopK(ratio=None, k=1)
    top1(torch.tensor([[3.0, 4.0], [0.0, 0.0], [1.0, 0.0]]), outgoing(0, 1, 2))
    assert top1.metrics() == {"compression_error": pytest.approx((9 / 25 + 0) / 2)}  # zeros out
    assert top1.metrics() == {}  # reset
