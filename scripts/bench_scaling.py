"""Scaling of D-PSGD with the number of nodes: the local backend against Ray with 1 and 2 actors.

D-PSGD on a random 6-regular graph, digits MLP (64-128-10) on digits tiled 10x, every node
one local step (a batch of 8) per round, so the work per node is the same at every size.
Each configuration runs in a fresh process (so that peak memory is its own): a warm-up
round, then ``--rounds`` timed rounds; the table gives the median seconds per round of
``--repeats`` processes, rounds per second, the ratio to the local backend measured in
the same run, and the peak resident memory of the driver plus every Ray actor.

Usage: python scripts/bench_scaling.py [--nodes 100 1000 10000] [--rounds 3] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

BACKENDS = {
    "local": [],
    "ray x1": ["backend=ray", "backend.num_actors=1", "backend.cpus_per_actor=2"],
    "ray x2": ["backend=ray", "backend.num_actors=2"],
}
RESULTS = Path(__file__).resolve().parent / "results"


def measure(overrides: list[str], rounds: int) -> dict[str, float]:
    """One process: build, warm up one round, time ``rounds`` rounds, report peak memory."""
    code = f"""
import json, resource, sys, time
sys.path.insert(0, {str(Path(__file__).resolve().parents[1] / "tests")!r})
from conftest import compose_config
from fedsim.build import build_simulation
simulation = build_simulation(compose_config(*{overrides!r}))
backend = simulation.backend
backend.start(simulation.task, simulation.num_rows, simulation.aggregator,
              simulation.federation.topology)
times = []
for round_idx in range({rounds} + 1):
    started = time.perf_counter()
    backend.execute(simulation.strategy.plan(round_idx, simulation.federation), round_idx)
    backend.rows([0])  # waits for every shard
    times.append(time.perf_counter() - started)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
if hasattr(backend, "actors"):
    import ray
    peak += sum(ray.get([actor.peak_memory_mb.remote() for actor in backend.actors]))
backend.close()
print(json.dumps({{"seconds": sorted(times[1:])[len(times[1:]) // 2], "peak_mb": peak}}))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    lines = [
        "| nodes | backend | s / round (median) | rounds / s | vs local | peak memory (MB) |",
        "|---|---|---|---|---|---|",
    ]
    for num_nodes in args.nodes:
        common = [
            "strategy=dpsgd", "strategy.local_epochs=null", "strategy.local_steps=1",
            "topology=regular", "topology.degree=6", f"num_nodes={num_nodes}", "data.tile=10",
            "progress=false",
        ]  # fmt: skip
        local_seconds = None
        for name, extra in BACKENDS.items():
            runs = [measure(common + extra, args.rounds) for _ in range(args.repeats)]
            seconds = statistics.median(run["seconds"] for run in runs)
            peak = statistics.median(run["peak_mb"] for run in runs)
            local_seconds = local_seconds or seconds
            lines.append(
                f"| {num_nodes} | {name} | {seconds:.4f} | {1 / seconds:.2f} | "
                f"{seconds / local_seconds:.2f}x | {peak:.0f} |"
            )
            print(lines[-1], flush=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bench_scaling.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
