"""The memory estimate, counted by hand for a tiny MLP; the refusal; the chunk size that fits;
and one real run whose peak resident memory it bounds."""

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from conftest import compose_config
from helpers import memory_of

from fedsim import memory
from fedsim.aggregators import Mean
from fedsim.backends.local import LocalBackend
from fedsim.build import build_simulation
from fedsim.data.datasets import Dataset
from fedsim.engine import Simulation
from fedsim.errors import ConfigError
from fedsim.memory import (
    BOOKKEEPING_PER_NODE,
    HEAP_FACTOR,
    INIT_ROW_BYTES,
    LOOP_RUNTIME_BYTES,
    MIXING_CACHE,
    RECORDER_ROW_BYTES,
    RUNTIME_BYTES,
    activation_sizes,
    check_memory,
    choose_chunk_size,
    estimate_memory,
    schedule_bytes,
)
from fedsim.models import mlp
from fedsim.plans import Aggregate, Average, Combining, Gossip, Merge, Push, Train
from fedsim.strategies import FedAvg
from fedsim.strategies.base import Federation
from fedsim.task import Task
from fedsim.training.schedule import NodeData, local_batches
from fedsim.training.sgd import SGD

CPU = torch.device("cpu")
# Three nodes holding 2, 3 and 3 of 8 train examples (4 features, 3 classes); 2 test examples.
SHARDS = [np.array([0, 1]), np.array([2, 3, 4]), np.array([5, 6, 7])]


def tiny_simulation(momentum: float = 0.9, vectorise: bool | str = True, **options) -> Simulation:
    """FedAvg, 2 of 3 nodes per round, MLP 4-5-3 (d = 4*5+5 + 5*3+3 = 43), batch 2."""
    dataset = Dataset(
        "hand", torch.zeros(8, 4), torch.arange(8) % 3, torch.zeros(2, 4), torch.tensor([0, 1]), 3
    )
    node_data = NodeData.from_shards(SHARDS)
    optimizer = SGD(lr=0.1, momentum=momentum, batch_size=2)
    task = Task(mlp((4,), 3, hidden=[5]), dataset, node_data, optimizer, seed=0)
    return Simulation(
        strategy=options.pop("strategy", FedAvg(sample_size=2)),
        federation=Federation(3, 0, None, node_data.num_examples),
        task=task,
        backend=LocalBackend(chunk_size=256, vectorise=vectorise),
        rounds=1,
        **options,
    )


def test_tiny_mlp_estimate_is_the_hand_count():
    estimate = memory_of(tiny_simulation())
    row = 43 * 4  # bytes of one model
    assert estimate.num_parameters == 43
    assert estimate.parameters == 4 * row  # 3 nodes + the server
    assert estimate.momentum == 4 * row
    assert (estimate.buffers, estimate.mixing, estimate.initialisation) == (0, 0, 0)
    assert estimate.bookkeeping == 4 * BOOKKEEPING_PER_NODE
    assert estimate.runtime == RUNTIME_BYTES  # vectorised: no torch.optim
    # train x 8*4*4, train y 8*8, test x 2*4*4, test y 2*8; the nodes' 8 indices and a pad,
    # 3 offsets and 3 counts, int64.
    assert estimate.data == 128 + 64 + 32 + 16 + (8 + 1) * 8 + 3 * 8 + 3 * 8
    # Per example: input 4 (Flatten is a view of it), Linear 5, ReLU 5, Linear 3 (also the
    # Sequential's output): sum 17, largest 5; 3 x 17 + 2 x 5 = 61 floats, batch of 2.
    activations = 2 * 61 * 4
    # Widest node 3 examples, 2 steps of 2: keys 32*1*3, epoch order 8*2*3, slots 29*2*2.
    schedule = 96 + 48 + 116
    # Gathered rows, autograd's gradients, the gradient buffer, momentum and its update: 5;
    # and the momentum of a step that fewer than half the nodes take, gathered apart: half.
    per_node = math.ceil(5.5 * row) + activations + schedule
    assert estimate.training_per_node == per_node
    assert estimate.private_per_node == 0
    assert estimate.chunk_size == 2  # FedAvg trains 2 nodes, whatever backend.chunk_size
    assert estimate.training == 2 * per_node
    # The server averages the 2 trained rows: it gathers them and makes their average.
    assert estimate.communication == 3 * row
    # 3 rows x 2 test examples of 17 + 2 x 5 floats at once.
    assert estimate.evaluation == 3 * 2 * 27 * 4
    # The 3 evaluated rows, the 3 node rows the consensus distance copies, 4 metrics per node.
    assert estimate.evaluation_rows == 6 * row + 3 * 4 * RECORDER_ROW_BYTES
    assert estimate.checkpoint == 8 * row  # parameters and momentum
    assert estimate.finite_check == 8 * 4 * 43  # torch.isfinite on every value, 8 bytes each
    held = 8 * row + 4 * BOOKKEEPING_PER_NODE + RUNTIME_BYTES
    assert estimate.kept == math.ceil(HEAP_FACTOR * estimate.training)  # > evaluation
    assert estimate.transient == estimate.evaluation_rows
    kept = math.ceil(HEAP_FACTOR * estimate.training)
    assert estimate.total == held + estimate.data + kept + estimate.evaluation_rows
    assert estimate.to_allocate == estimate.total - estimate.data
    assert estimate.peak == estimate.resident + estimate.to_allocate


def test_the_estimate_is_a_function_of_the_run_parts():
    """No simulation or backend needed, and the same parts give the same estimate."""
    simulation = tiny_simulation()
    plan = FedAvg(sample_size=2).plan(0, simulation.federation)
    parts = {"num_servers": 1, "aggregator": Mean(), "rounds": 1, "eval_nodes": 100}
    parts |= {"private": False, "vectorise": True}
    estimate = estimate_memory(simulation.task, simulation.federation, plan, **parts)
    assert estimate == memory_of(simulation)  # chunks of the 2 trained nodes
    assert estimate.resident == 0  # measured apart (with_resident_memory)
    one = estimate_memory(simulation.task, simulation.federation, plan, **parts, chunk_size=1)
    assert one == estimate.with_chunk_size(1)


def test_parameter_bytes_are_those_the_backend_allocates():
    simulation = tiny_simulation()
    estimate = memory_of(simulation)
    backend = simulation.backend
    backend.start(simulation.task, simulation.num_rows)
    assert estimate.parameters == backend.params.nelement() * backend.params.element_size()
    assert estimate.momentum == backend.momentum.nelement() * backend.momentum.element_size()


def test_without_momentum_and_with_the_loop_trainer():
    vectorised = memory_of(tiny_simulation(momentum=0.0))
    loop = memory_of(tiny_simulation(momentum=0.0, vectorise=False))
    row = 43 * 4
    assert vectorised.momentum == 0
    assert vectorised.training_per_node == 3 * row + 2 * 61 * 4 + 260
    assert vectorised.checkpoint == 4 * row
    # The loop gathers the chunk, then trains one model (rows, grads, activations) at a time.
    assert (loop.training_per_node, loop.training_fixed) == (row + 260, 3 * row + 2 * 61 * 4)
    assert loop.runtime == RUNTIME_BYTES + LOOP_RUNTIME_BYTES  # torch.optim's first import


PLAIN, CORRECTED, COMBINED = Combining(), Combining(corrects=True), Combining(combines_rows=True)


def test_rows_each_plan_step_makes():
    ring = sp.csr_array(np.full((5, 5), 0.2))
    three, two = np.arange(3), np.arange(2)
    assert Gossip(ring).working_rows(5, PLAIN) == 0  # W X goes into the spare rows (held)
    assert Average(three, np.array([5]), np.full(3, 1 / 3)).working_rows(5, PLAIN) == 4
    groups = (Average(three, two, np.full(3, 1 / 3)), Average(two, three, np.full(2, 0.5)))
    assert Aggregate(groups).working_rows(5, PLAIN) == 3 + 2  # the widest gathering, one per group
    assert Aggregate(groups).held_results(5, PLAIN) == [1, 1]
    assert Average(three, two, np.full(3, 1 / 3)).held_results(5, PLAIN) == []  # one result
    assert Push(three, np.array([1, 2, 0]), np.ones(3)).working_rows(5, PLAIN) == 3
    assert Merge(two, np.full(2, 0.5)).working_rows(5, PLAIN) == 4
    assert Train(three, epochs=1).working_rows(5, PLAIN) == 0
    # A variance-corrected aggregator: the receivers' rows, their corrected copy, blocks.
    assert Gossip(ring).working_rows(5, CORRECTED) == 15
    assert Average(three, np.array([5]), np.full(3, 1 / 3)).working_rows(5, CORRECTED) == 5
    assert Aggregate(groups).working_rows(5, CORRECTED) == 3 + 2 * 2
    assert Push(three, np.array([1, 2, 0]), np.ones(3)).working_rows(5, CORRECTED) == 6
    assert Merge(two, np.full(2, 0.5)).working_rows(5, CORRECTED) == 6
    # An aggregator that combines the models themselves: COMBINE_ROWS per model received.
    assert Gossip(ring).working_rows(5, COMBINED) == 4 * 25 + 5
    assert Average(three, np.array([5]), np.full(3, 1 / 3)).working_rows(5, COMBINED) == 14


def test_an_aggregate_of_small_groups_keeps_their_results_in_the_heap():
    """Gossip learning merges each node with one received model: one group per node, each
    result a row (under glibc's mmap threshold), all held until written, then kept."""
    simulation = build_simulation(
        compose_config("strategy=gossip_learning", "num_nodes=40", "eval_nodes=1")
    )
    estimate = memory_of(simulation)
    row = estimate.num_parameters * 4
    merges = [
        step for step in simulation.strategy.plan(0, simulation.federation).steps
        if isinstance(step, Aggregate)
    ]  # fmt: skip
    assert merges and estimate.communication_kept == max(len(m.groups) for m in merges) * row
    assert estimate.kept >= estimate.communication_kept
    # Rows as large as a federation's are mapped apart and given back: not kept.
    gossip = build_simulation(compose_config("strategy=dpsgd", "topology=ring", "num_nodes=40"))
    assert memory_of(gossip).communication_kept == 0


def test_scaffold_holds_its_control_variates_and_fedadam_its_moments():
    """Three (rows, d) slots for SCAFFOLD (c_i and c, the c received, the change sent);
    two rows of moments for FedAdam's one server row."""
    sizes = {}
    for strategy in ("fedavg", "scaffold", "fedadam"):
        simulation = build_simulation(compose_config(f"strategy={strategy}", "num_nodes=12"))
        sizes[strategy] = memory_of(simulation), simulation
    fedavg, simulation = sizes["fedavg"]
    row = simulation.task.layout.size * 4
    assert fedavg.slots == 0
    scaffold = sizes["scaffold"][0]
    assert scaffold.slots == (3 * 13 + 2) * row  # its update of c counted as an optimizer's
    assert sizes["fedadam"][0].slots == 2 * row
    assert scaffold.checkpoint == fedavg.checkpoint + scaffold.slots


def test_push_and_merge_gossip_holds_a_buffer_per_row():
    simulation = build_simulation(
        compose_config("strategy=gossip", "topology=ring", "num_nodes=6", "eval_nodes=1")
    )
    estimate = memory_of(simulation)
    row = estimate.num_parameters * 4
    # A row, a weight and no variances (the mean aggregator corrects nothing) per row.
    assert estimate.buffers == 6 * (row + 4)
    # Round 0: every node trains and pushes to its 2 neighbours: 12 rows gathered, weighted
    # in place; each of the 6 merges gathers its row and its buffer: 12 rows too.
    assert estimate.communication == 12 * row
    assert estimate.checkpoint == 6 * row + estimate.buffers
    backend = simulation.backend
    backend.start(simulation.task, simulation.num_rows)
    backend.execute(simulation.strategy.plan(0, simulation.federation), 0)
    made = sum(part.nelement() * part.element_size() for part in backend.buffer.values())
    assert made == estimate.buffers


@pytest.mark.parametrize("topology, matrices", [("ring", 1), ("random_regular_per_round", 3)])
def test_mixing_matrices_the_backend_keeps(topology, matrices):
    """A static graph's matrix once; a new one each round: one per round, at most 64; and
    the spare rows of the product, once the backend has gossiped."""
    overrides = ("strategy=dpsgd", f"topology={topology}", "num_nodes=8", "eval_nodes=1")
    simulation = build_simulation(compose_config(*overrides, "rounds=3"))
    nonzeros = simulation.federation.topology.mixing(0).nnz
    assert nonzeros == 8 * (3 if topology == "ring" else 5)  # self and 2 or 4 neighbours
    per_matrix = 20 if matrices == 1 else 20 + 16  # torch's copy, and scipy's kept alive
    spare = 8 * memory_of(simulation).num_parameters * 4  # the rows that W X is written into
    assert memory_of(simulation).mixing == matrices * nonzeros * per_matrix + spare
    backend = simulation.backend
    backend.start(simulation.task, simulation.num_rows)
    for round_idx in range(3):
        backend.execute(simulation.strategy.plan(round_idx, simulation.federation), round_idx)
    assert len(backend._mixing) == matrices
    long_run = build_simulation(compose_config(*overrides, "rounds=100"))
    cached = 1 if matrices == 1 else MIXING_CACHE
    assert memory_of(long_run).mixing == cached * nonzeros * per_matrix + spare


def test_independent_initialisation_is_held():
    simulation = build_simulation(
        compose_config("num_nodes=5", "strategy.sample_size=2", "init=independent")
    )
    estimate = memory_of(simulation)
    row = estimate.num_parameters * 4
    assert estimate.initialisation == 6 * (row + INIT_ROW_BYTES)  # 5 nodes + the server
    assert estimate.held == (
        estimate.parameters + estimate.bookkeeping + estimate.runtime + estimate.initialisation
    )


def test_private_training_is_counted_among_the_large_parts():
    simulation = build_simulation(
        compose_config("strategy=dpsgd", "privacy=local", "num_nodes=4", "eval_nodes=1")
    )
    estimate = memory_of(simulation)
    row, batch = estimate.num_parameters * 4, simulation.task.optimizer.batch_size
    assert estimate.private_per_node == (5 * batch + 4) * row
    assert estimate.private_training == 4 * estimate.private_per_node
    assert estimate.training == 4 * (estimate.training_per_node + estimate.private_per_node)
    assert estimate.transient == estimate.private_training
    small = math.ceil(HEAP_FACTOR * 4 * estimate.training_per_node)
    assert estimate.kept == max(small, estimate.evaluation)


def test_activation_sizes_of_one_example():
    assert activation_sizes(mlp((4,), 3, hidden=[5]), torch.zeros(1, 4)) == (17, 5)
    with pytest.raises(ConfigError, match=r"cannot take the data's inputs of shape \(7,\)"):
        activation_sizes(mlp((4,), 3, hidden=[5]), torch.zeros(1, 7))


def test_schedule_bytes_bound_the_real_schedule():
    node_data = NodeData.from_shards([np.arange(5), np.arange(5, 40), np.arange(40, 41)])
    nodes = torch.arange(3)
    counts = node_data.num_examples
    for epochs, steps in ((2, None), (None, 7)):
        batches = local_batches(
            node_data, nodes, seed=0, round_idx=0, batch_size=4, epochs=epochs, steps=steps
        )
        made = sum(t.nelement() * t.element_size() for t in (batches.indices, batches.mask))
        assert made <= len(nodes) * schedule_bytes(counts, 4, epochs, steps)
    # Steps mode: the node with 1 example needs 7 epochs for 7 steps.
    assert schedule_bytes([1, 35], 4, None, 7) == 32 * 7 * 35 + 8 * 7 * 35 + 29 * 7 * 4


@pytest.mark.parametrize("strategy", ["fedavg", "dpsgd"])
def test_estimate_grows_with_num_nodes(strategy):
    totals = [
        memory_of(
            build_simulation(
                compose_config(
                    f"strategy={strategy}",
                    f"num_nodes={num_nodes}",
                    "partition.samples_per_node=10",
                    *(["strategy.sample_size=2"] if strategy == "fedavg" else []),
                )
            )
        ).total
        for num_nodes in (2, 5, 20, 100)
    ]
    assert totals == sorted(totals) and totals[0] < totals[-1]


def test_estimate_grows_with_the_chunk_size():
    simulation = build_simulation(compose_config("strategy=dpsgd", "num_nodes=20", "eval_nodes=1"))
    estimates = [memory_of(simulation, chunk_size=size) for size in range(1, 25)]
    totals = [estimate.total for estimate in estimates]
    training = [estimate.training for estimate in estimates]
    assert totals == sorted(totals) and totals[0] < totals[-1]
    assert training[:20] == sorted(set(training[:20]))  # strictly growing up to the 20 nodes
    assert training[19:] == [training[19]] * 5  # no chunk holds more than the 20 nodes
    assert memory_of(simulation, chunk_size=7) == memory_of(simulation).with_chunk_size(7)


def test_chosen_chunk_size_is_the_largest_that_fits():
    estimate = memory_of(build_simulation(compose_config("strategy=dpsgd", "num_nodes=50")))
    smallest, largest = estimate.with_chunk_size(1), estimate.with_chunk_size(50)
    for budget in np.linspace(smallest.to_allocate, largest.to_allocate, 7).astype(int):
        chosen = choose_chunk_size(estimate, int(budget))
        assert estimate.with_chunk_size(chosen).to_allocate <= budget
        assert chosen == 50 or estimate.with_chunk_size(chosen + 1).to_allocate > budget
    assert choose_chunk_size(estimate, largest.to_allocate + 1) == 50
    assert choose_chunk_size(estimate, 0) == 1  # nothing fits: check_memory refuses the run


def test_auto_chunk_size_is_chosen_before_the_backend_is_built(monkeypatch):
    overrides = ("strategy=dpsgd", "num_nodes=20", "eval_nodes=1")
    estimate = memory_of(build_simulation(compose_config(*overrides)))
    # Enough for chunks of 7 nodes, not of 8 (the budget is 0.9 x available).
    available = math.ceil(estimate.with_chunk_size(7).to_allocate / 0.9) + 1
    monkeypatch.setattr(memory, "available_memory", lambda device: available)
    simulation = build_simulation(compose_config(*overrides, "backend.chunk_size=auto"))
    assert simulation.backend.chunk_size == 7


def test_a_run_that_does_not_fit_is_refused_with_what_to_change(monkeypatch):
    estimate = memory_of(tiny_simulation(strategy=FedAvg(sample_size=3)))
    # Enough for chunks of two nodes, not of three (the budget is 0.9 x available).
    available = math.ceil(estimate.with_chunk_size(2).to_allocate / 0.9) + 1
    monkeypatch.setattr(memory, "available_memory", lambda device: available)
    check_memory(estimate.with_chunk_size(2), CPU)
    with pytest.raises(ConfigError) as error:
        check_memory(estimate.with_chunk_size(3), CPU)
    message = str(error.value)
    assert message.startswith(
        f"this run needs about {memory.format_bytes(estimate.with_chunk_size(3).to_allocate)} "
        f"more memory on cpu but {memory.format_bytes(available)} is available (parameters "
    )
    assert "4 rows x 43 x 4 bytes" in message
    assert "set backend.chunk_size=2 (now 3), use fewer nodes than num_nodes=3" in message
    assert "\n" not in message


def test_a_run_too_large_for_any_chunk_size_is_refused(monkeypatch):
    monkeypatch.setattr(memory, "available_memory", lambda device: 1000)
    with pytest.raises(ConfigError, match="use fewer nodes than num_nodes=3") as error:
        check_memory(memory_of(tiny_simulation()), CPU)
    assert "backend.chunk_size" not in str(error.value)


def test_unknown_available_memory_checks_nothing(monkeypatch):
    monkeypatch.setattr(memory, "available_memory", lambda device: None)
    check_memory(memory_of(tiny_simulation()), CPU)


def test_available_memory_of_this_machine():
    available = memory.available_memory(CPU)
    assert available is None or available > 0


@pytest.mark.parametrize(
    "version, files",
    [
        ("0::/job\n", {"sys/fs/cgroup/job": ("memory.max", "memory.current", "inactive_file")}),
        (
            "4:memory:/job\n",
            {
                "sys/fs/cgroup/memory/job": (
                    "memory.limit_in_bytes",
                    "memory.usage_in_bytes",
                    "total_inactive_file",
                )
            },
        ),
    ],
)
def test_cgroup_headroom_is_limit_less_working_set(tmp_path, version, files):
    (tmp_path / "proc/self").mkdir(parents=True)
    (tmp_path / "proc/self/cgroup").write_text(version)
    ((folder, (limit, usage, inactive)),) = files.items()
    (tmp_path / folder).mkdir(parents=True)
    (tmp_path / folder / limit).write_text("1000\n")
    (tmp_path / folder / usage).write_text("700\n")
    (tmp_path / folder / "memory.stat").write_text(f"anon 500\n{inactive} 200\n")
    assert memory._cgroup_headroom(tmp_path) == 1000 - (700 - 200)
    (tmp_path / folder / limit).write_text("max\n" if version.startswith("0") else f"{2**63}\n")
    assert memory._cgroup_headroom(tmp_path) is None


def test_format_bytes():
    assert [memory.format_bytes(n) for n in (0, 1023, 1536, 3 * 2**30, 2**60)] == [
        "0 B",
        "1023 B",
        "1.5 KiB",
        "3.0 GiB",
        "1024.0 PiB",
    ]


def test_failed_allocations_are_recognised():
    with pytest.raises(MemoryError) as numpy_error:
        np.zeros((10**12, 10**6))
    with pytest.raises(RuntimeError) as torch_error:
        torch.empty(10**13, 10**6)
    assert memory.allocation_failure(numpy_error.value).startswith("MemoryError: Unable to")
    wrapped = ValueError("building the data set failed")
    wrapped.__cause__ = torch_error.value
    assert memory.allocation_failure(wrapped).startswith("RuntimeError: ")
    assert memory.allocation_failure(ValueError("test_size = 2")) is None


def test_resident_memory_is_measured_and_not_compared():
    estimate = memory_of(tiny_simulation())
    assert estimate.resident == 0  # the estimate is a function of the run's parts only
    first = memory.with_resident_memory(estimate, CPU)
    before = memory.resident_memory()
    block = torch.ones(2**24)  # 64 MiB, written
    assert memory.resident_memory() - before >= 60 * 2**20
    second = memory.with_resident_memory(estimate, CPU)
    assert second.resident > first.resident > 0
    assert second == first  # the run's own parts, whatever the process held
    del block


# fedsim's CLI with the memory check wrapped to save the estimate it receives (argv[1]),
# and the run's own peak resident memory once it is done: Linux's VmHWM, since ru_maxrss
# keeps the resident size of the process that started it (a large pytest process, forked).
RUN_AND_SAVE_ESTIMATE = """
import json, re, resource, sys
from pathlib import Path
import fedsim.build
from fedsim.cli import main

checked, path, saved = fedsim.build.check_memory, sys.argv[1], {}

def check_memory(estimate, device):
    saved["estimate"] = estimate.peak
    return checked(estimate, device)

fedsim.build.check_memory = check_memory
code = main(["run", *sys.argv[2:]])
status = Path("/proc/self/status")
if status.exists():
    saved["peak"] = int(re.search(r"VmHWM:\\s*(\\d+) kB", status.read_text())[1]) * 1024
else:  # macOS: ru_maxrss in bytes
    saved["peak"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
Path(path).write_text(json.dumps(saved))
sys.exit(code)
"""


@pytest.mark.slow
def test_a_real_run_peaks_within_its_estimate(tmp_path):
    """D-PSGD on 2,000 nodes: gossip makes two copies of the rows (77 MB), the consensus
    distance and the checkpoint one each; the estimate bounds the peak, within 1.3 times.

    The peak is the run's own (VmHWM): the child's ru_maxrss would include the resident
    size of the pytest process that forked it (1,205 MiB once, late in a suite)."""
    overrides = [
        "strategy=dpsgd", "topology=regular", "num_nodes=2000", "data.tile=2", "rounds=1",
        "progress=false", f"hydra.run.dir={tmp_path / 'run'}",
    ]  # fmt: skip
    saved = tmp_path / "memory.json"
    run = subprocess.run(
        [sys.executable, "-c", RUN_AND_SAVE_ESTIMATE, str(saved), *overrides],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    measured = json.loads(saved.read_text())
    peak, estimate = measured["peak"], measured["estimate"]
    print(f"peak {peak / 2**20:.0f} MiB, estimate {estimate / 2**20:.0f} MiB")
    assert peak <= estimate <= 1.3 * peak
