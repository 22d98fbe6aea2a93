"""Population-scale FL: seconds per round and peak memory against the population size.

Each configuration runs in a fresh process: a FedAvg (or FedBuff) job of ``--rounds``
rounds on a population of N clients that are derived on demand (``partition=population_*``)
and hold rows only while they train (``backend.rows=on_demand``), evaluated at the first
and the last round only.  The process reports the median of its rounds after the first two
(plan, training, aggregation, counters and clock, as the engine runs them), its peak
resident memory, and the memory guard's estimate.  Rows with ``backend.rows=all`` are the
full (N, d) tensor for comparison, where it fits.  The table gives the medians of
``--repeats`` processes, and the bytes per client: the growth of the peak from the
smallest population, over the clients added.

Usage: python scripts/bench_population.py [--configs fedavg-1e4 ...] [--repeats 3]
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import subprocess
import sys
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent
ROOT = SCRIPTS.parent
COHORT = ["strategy.sample_size=100", "backend.rows=on_demand"]
DIGITS = ["partition=population_dirichlet"]  # 20 examples per client, Dir(0.5 p) classes
SYNTHETIC = [
    "data=synthetic",
    "partition=population_synthetic",
    "partition.max_examples_per_client=1000",
]
FEDBUFF = ["strategy=fedbuff", "strategy.concurrency=100", "strategy.buffer_size=10"]
CONFIGS = {
    **{f"fedavg-{n}": [f"num_nodes={n}", *DIGITS, *COHORT] for n in ("1e4", "1e5", "1e6", "1e7")},
    "fedavg-1e4-all": ["num_nodes=1e4", *DIGITS, "strategy.sample_size=100"],
    "fedavg-1e5-all": ["num_nodes=1e5", *DIGITS, "strategy.sample_size=100"],
    "fedavg-1e6-all": ["num_nodes=1e6", *DIGITS, "strategy.sample_size=100"],
    **{
        f"synthetic-{n}": [f"num_nodes={n}", *SYNTHETIC, *COHORT]
        for n in ("1e4", "1e5", "1e6", "1e7")
    },
    "fedbuff-1e6": ["num_nodes=1e6", *DIGITS, *FEDBUFF, "backend.rows=on_demand"],
}

CHILD = r"""
import json, resource, statistics, sys, time
import torch
sys.path.insert(0, {tests!r})
from conftest import compose_config
from fedsim.build import _memory_estimate, build_simulation, first_plan
from fedsim.metrics.recorder import Recorder

config = compose_config(*{overrides!r}, "rounds={rounds}", "eval_every={rounds}", "progress=false")
started = time.perf_counter()
simulation = build_simulation(config)
built = time.perf_counter() - started
parts = (simulation.strategy, simulation.aggregator, None, simulation.messages)
plan = first_plan(simulation.strategy, simulation.federation)
estimate = _memory_estimate(
    config, simulation.task, simulation.federation, plan, *parts, torch.device("cpu")
)
times, play = [], simulation._round
def timed(round_idx):
    started = time.perf_counter()
    diverging = play(round_idx)
    times.append(time.perf_counter() - started)
    return diverging
simulation._round = timed
recorder = Recorder({path!r})
final = simulation.run(recorder, progress=False)
recorder.close()
print(json.dumps({{
    "round_s": statistics.median(times[2:]),
    "build_s": built,
    "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "estimate_mb": estimate.peak / 2**20,
    "rows": estimate.num_rows,
    "accuracy": final["accuracy"],
}}))
"""


def measure(name: str, rounds: int, scratch: Path) -> dict[str, float]:
    """One fresh process's measurement of configuration ``name``."""
    overrides = [setting.replace("1e4", "10000").replace("1e5", "100000")
                 .replace("1e6", "1000000").replace("1e7", "10000000")
                 for setting in CONFIGS[name]]  # fmt: skip
    path = scratch / f"{name}-{len(list(scratch.iterdir()))}.parquet"
    code = CHILD.format(
        tests=str(ROOT / "tests"), overrides=overrides, rounds=rounds, path=str(path)
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    if done.returncode:
        reason = (done.stderr.strip().splitlines() or ["failed"])[-1]
        advice = reason.rsplit(");", 1)[-1].split(",")[0].strip()  # the guard's first advice
        return {"error": f"refused: {reason.split(': ', 1)[-1][:60]}... ({advice})"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--scratch", type=Path, default=Path("/tmp/fedsim-bench-population"))
    args = parser.parse_args()
    args.scratch.mkdir(parents=True, exist_ok=True)
    print(f"# Population-scale FL ({datetime.date.today()}, {platform.processor() or 'cpu'})\n")
    print(
        f"- command: `python scripts/bench_population.py --configs {' '.join(args.configs)} "
        f"--repeats {args.repeats} --rounds {args.rounds}`"
    )
    print("- 100 clients per round (FedBuff: 100 training at once, a step per 10 updates)\n")
    print("| config | clients | s / round | build s | peak MB | guard's estimate MB | rows held |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    peaks = {}
    for name in args.configs:
        runs = [measure(name, args.rounds, args.scratch) for _ in range(args.repeats)]
        failed = [run for run in runs if "error" in run]
        if failed:
            print(f"| {name} | | {failed[0]['error']} | | | | |")
            continue

        def median(key: str, runs: list[dict[str, float]] = runs) -> float:
            return statistics.median(run[key] for run in runs)

        clients = float(name.split("-")[1])
        peaks[name] = (clients, median("peak_mb"))
        print(
            f"| {name} | {clients:,.0f} | {median('round_s'):.3f} | {median('build_s'):.1f} | "
            f"{median('peak_mb'):,.0f} | {median('estimate_mb'):,.0f} | {int(median('rows')):,} |"
        )
    for family in ("fedavg", "synthetic"):
        sizes = sorted(v for k, v in peaks.items() if k.startswith(family) and "all" not in k)
        if len(sizes) > 1:
            (small, low), (large, high) = sizes[0], sizes[-1]
            per_client = (high - low) * 2**20 / (large - small)
            print(f"\n- {family}: {per_client:.0f} bytes per client ({small:,.0f} to {large:,.0f})")


if __name__ == "__main__":
    main()
