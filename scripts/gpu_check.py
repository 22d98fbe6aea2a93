"""The CUDA path in one short run (issue 22 item 6): parity with the CPU, then timings.

1. Parity: FedAvg and D-PSGD on a small digits job run on the CPU, on ``--device`` with the
   local backend, and on ``--device`` inside one Ray actor holding a GPU; the final accuracy
   and loss must agree within ``--tolerance`` (float32 sums in another order, other
   kernels: not bit for bit).
2. Timings on ``--device``: seconds per D-PSGD round (random 6-regular graph, digits MLP,
   one local step of 8 per node) at each of ``--nodes``, and per FedAvg round of LeNet-5 on
   28x28 digits with every one of ``--cnn-nodes`` clients training; medians of the rounds
   after a warm-up round, and peak GPU memory.

Without CUDA it stops at once with one line and exit status 2 (``--device cpu`` runs every
step on the CPU instead: what the tests do, at small sizes).  Prints one markdown table.

Usage: python scripts/gpu_check.py [--device cuda] [--nodes 10000 100000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

SMALL = ("num_nodes=12", "rounds=4", "eval_every=4", "progress=false", "seed=0")
PARITY = {
    "fedavg": ("strategy=fedavg", "strategy.sample_size=6"),
    "dpsgd": ("strategy=dpsgd", "topology=regular"),
}


def final(device: str, settings: tuple[str, ...], ray: bool) -> dict[str, float]:
    """The last evaluation's accuracy and loss of one small run."""
    from conftest import compose_config

    from fedsim.build import build_simulation
    from fedsim.metrics.recorder import Recorder

    backend = ()
    if ray:
        gpus = 0 if device == "cpu" else 1
        backend = ("backend=ray", "backend.num_actors=1", f"backend.gpus_per_actor={gpus}")
    simulation = build_simulation(compose_config(*SMALL, *settings, f"device={device}", *backend))
    with tempfile.TemporaryDirectory() as folder:
        recorder = Recorder(Path(folder) / "metrics.parquet")
        try:
            result = simulation.run(recorder, progress=False)
        finally:
            simulation.backend.close()
            recorder.close()
    return {"accuracy": result["accuracy"], "loss": result["loss"]}


def per_round(device: str, settings: tuple[str, ...], rounds: int) -> tuple[float, float]:
    """Median seconds per round after a warm-up round, and peak device memory in MiB."""
    from conftest import compose_config

    from fedsim.build import build_simulation

    simulation = build_simulation(compose_config(*settings, f"device={device}", "progress=false"))
    backend, plan = simulation.backend, simulation.strategy.plan
    backend.start(
        simulation.task, simulation.num_rows, simulation.aggregator, simulation.federation.topology
    )
    seconds = []
    for round_idx in range(rounds + 1):
        _synchronise(device)
        started = time.perf_counter()
        backend.execute(plan(round_idx, simulation.federation), round_idx)
        backend.rows([0])
        _synchronise(device)
        seconds.append(time.perf_counter() - started)
    backend.close()
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else 0.0
    return statistics.median(seconds[1:]), peak


def _synchronise(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--nodes", type=int, nargs="+", default=[10000, 100000])
    parser.add_argument("--cnn-nodes", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tolerance", type=float, default=2e-3)
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(
            f"gpu_check: --device {args.device} but torch {torch.__version__} sees no CUDA "
            "device (torch.cuda.is_available() is False); nothing checked",
            file=sys.stderr,
        )
        return 2
    from fedsim.backends.ray_local import init_local_ray

    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
    print(f"device: {args.device} ({name}), torch {torch.__version__}\n")
    print("| check | setting | value | reference (CPU) | within tolerance |")
    print("|---|---|---:|---:|---|")
    failed = False
    init_local_ray(num_cpus=2)
    for strategy, settings in PARITY.items():
        reference = final("cpu", settings, ray=False)
        for where, ray in (("local", False), ("ray actor", True)):
            result = final(args.device, settings, ray)
            for metric, value in result.items():
                close = abs(value - reference[metric]) <= args.tolerance
                failed |= not close
                print(
                    f"| {strategy} on {where} | {metric} | {value:.4f} | "
                    f"{reference[metric]:.4f} | {'yes' if close else 'NO'} |"
                )
    print("\n| workload | s / round | peak device MiB |")
    print("|---|---:|---:|")
    for nodes in args.nodes:
        tile = max(10, -(-nodes // 1400))  # at least one example per node
        seconds, peak = per_round(
            args.device,
            ("strategy=dpsgd", "strategy.local_epochs=null", "strategy.local_steps=1",
             "topology=regular", "topology.degree=6", f"num_nodes={nodes}", f"data.tile={tile}"),
            args.rounds,
        )  # fmt: skip
        print(f"| D-PSGD MLP, {nodes} nodes | {seconds:.4f} | {peak:.0f} |", flush=True)
    seconds, peak = per_round(
        args.device,
        ("strategy=fedavg", f"num_nodes={args.cnn_nodes}", f"strategy.sample_size={args.cnn_nodes}",
         "model=lenet5", "++data.image_size=28", "backend.vectorise=true"),
        args.rounds,
    )  # fmt: skip
    print(f"| FedAvg LeNet-5, {args.cnn_nodes} clients | {seconds:.4f} | {peak:.0f} |")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
