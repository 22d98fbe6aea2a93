"""fedsim's seconds per round as a multiple of the machine's bound for that round.

For each configuration a fresh process measures, in this order:

1. the machine's in-place streaming rate, ``X.add_(G, alpha=-lr)`` on two (10^8 / d, d)
   float32 tensors (3 x 4 n d bytes: read X, read G, write X), best of 7 after a warm-up;
2. the matmul rate that ``torch.bmm`` reaches on the model's layer shapes for a chunk of
   nodes (the forward, weight-gradient and input-gradient products of each linear layer),
   best of 7;
3. fedsim's rounds: a warm-up round, then ``--rounds`` timed rounds of the local backend
   (``backend.execute`` on the strategy's plan, as the engine runs it), their mean;
4. the bound of those rounds (their mean), from their plans: the rows of (d,) float32
   that their steps must stream at the least, over the streaming rate, plus the FLOPs of
   their training (``torch.utils.flop_counter`` on one mini-batch of the model, times the
   real examples every node trains on) over the matmul rate.  Rows streamed: a training
   step reads a row, writes its gradient and updates the row in place (5); a gossip reads
   every nonzero of W and writes each row; an average reads its sources and writes its
   targets; a push reads the sender and updates a buffer row (3); a merge reads the row
   and its buffer, writes the row and empties the buffer (4).

The table gives the medians of ``--repeats`` processes.  A D-PSGD round on a 6-regular
graph with one step per node streams 5 + 7 + 1 = 13 rows per node (the issue's bound).

Usage: python scripts/bench_floor.py [--configs dpsgd-1k dpsgd-10k ...] [--repeats 3]
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import platform
import statistics
import subprocess
import sys
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent
ROOT = SCRIPTS.parent
BATCH = 8  # one mini-batch of 8 per node per round, as the D-PSGD workload


def workload(num_nodes: int) -> list[str]:
    """Digits tiled so that every node holds one batch of 8 examples."""
    tile = math.ceil(BATCH * num_nodes / 1437)
    return [f"num_nodes={num_nodes}", f"data.tile={tile}", f"optimizer.batch_size={BATCH}"]


DPSGD = [
    "strategy=dpsgd", "strategy.local_epochs=null", "strategy.local_steps=1",
    "topology=regular", "topology.degree=6",
]  # fmt: skip
CONFIGS = {
    "dpsgd-1k": DPSGD + workload(1_000),
    "dpsgd-10k": DPSGD + workload(10_000),
    "dpsgd-100k": DPSGD + workload(100_000),
    "dpsgd-logreg-1m": [*DPSGD, *workload(1_000_000), "model=logreg"],
    "fedavg-10k": ["strategy=fedavg", "strategy.sample_size=1000", *workload(10_000)],
    "gossip-10k": ["strategy=gossip", "topology=regular", "topology.degree=6", *workload(10_000)],
    # Clients of unequal sizes take unequal numbers of steps in an epoch: NIID-Bench's
    # quantity skew (sizes in Dir(0.5) proportions), 100 of 1,000 clients per round.
    "fedavg-skew-1k": [
        "strategy=fedavg",
        "strategy.sample_size=100",
        "partition=quantity_skew",
        "num_nodes=1000",
        "data.tile=10",
    ],
}
TICKS = {"gossip-10k": 30}  # the event gossip trains every 8-12 ticks: time 30 of them
RATES_FLOATS = 10**8  # floats in each tensor of the streaming test: far beyond the caches

CHILD = r"""
import json, resource, sys, time
import torch
from torch.utils.flop_counter import FlopCounterMode
sys.path.insert(0, {tests!r})
from conftest import compose_config
from fedsim.build import build_simulation
from fedsim.plans import Aggregate, Average, Gossip, Merge, Push, Train
from fedsim.training.schedule import local_batches

def best(fn, times=7):
    fn()
    taken = []
    for _ in range(times):
        started = time.perf_counter(); fn(); taken.append(time.perf_counter() - started)
    return min(taken)

simulation = build_simulation(compose_config(*{overrides!r}, "progress=false"))
task, backend = simulation.task, simulation.backend
d = task.layout.size

x, g = torch.randn({rates_floats} // d, d), torch.randn({rates_floats} // d, d)
stream = 3 * x.numel() * 4 / best(lambda: x.add_(g, alpha=-1e-9))
del x, g

linears = [m for m in task.model.modules() if isinstance(m, torch.nn.Linear)]
chunk, batch = 256, task.optimizer.batch_size
shapes = [
    (torch.randn(chunk, batch, l.in_features), torch.randn(chunk, l.in_features, l.out_features))
    for l in linears
]
def products():
    for index, (a, w) in enumerate(shapes):
        out = torch.bmm(a, w)
        torch.bmm(a.transpose(1, 2), out)  # the weight's gradient
        if index:
            torch.bmm(out, w.transpose(1, 2))  # the input's gradient
flops_products = sum(
    2 * chunk * batch * l.in_features * l.out_features * (2 if i == 0 else 3)
    for i, l in enumerate(linears)
)
matmul = flops_products / best(products)

model = task.model
inputs = task.dataset.train_x[:batch]
labels = task.dataset.train_y[:batch]
with FlopCounterMode(display=False) as counter:
    torch.nn.functional.cross_entropy(model(inputs), labels).backward()
flops_per_example = counter.get_total_flops() / batch

backend.start(task, simulation.num_rows, simulation.aggregator, simulation.federation.topology)
rows, examples, seconds = 0, 0, []
for round_idx in range({rounds} + 1):
    plan = simulation.strategy.plan(round_idx, simulation.federation)
    started = time.perf_counter()
    backend.execute(plan, round_idx)
    seconds.append(time.perf_counter() - started)
    if not round_idx:
        continue  # the warm-up
    for step in plan.steps:  # the round's least traffic, from its plan
        if isinstance(step, Train):
            nodes = torch.as_tensor(step.nodes)
            batches = local_batches(
                task.node_data, nodes, seed=task.seed, round_idx=round_idx, batch_size=batch,
                epochs=step.epochs, steps=step.steps,
            )
            rows += 5 * int(batches.active.sum())
            examples += int(batches.mask.sum())
        elif isinstance(step, Gossip):
            rows += step.weights.nnz + step.weights.shape[0]
        elif isinstance(step, Average | Aggregate):
            for group in step.groups if isinstance(step, Aggregate) else (step,):
                rows += len(group.sources) + len(group.targets)
        elif isinstance(step, Push):
            rows += 3 * len(step.sources)
        elif isinstance(step, Merge):
            rows += 4 * len(step.nodes)
import resource
timed = len(seconds) - 1  # rounds differ (event gossip): totals over the timed rounds
bound = (rows * d * 4 / stream + examples * flops_per_example / matmul) / timed
print(json.dumps(dict(
    seconds=sum(seconds[1:]) / timed, bound=bound,
    stream_gbs=stream / 1e9, matmul_gflops=matmul / 1e9,
    rows_per_node=rows / {num_nodes} / timed, flops=examples * flops_per_example,
    peak_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
)))
"""


def measure(name: str, rounds: int) -> dict[str, float]:
    overrides = CONFIGS[name]
    num_nodes = int(next(o for o in overrides if o.startswith("num_nodes=")).split("=")[1])
    code = CHILD.format(
        tests=str(ROOT / "tests"),
        overrides=overrides,
        rates_floats=RATES_FLOATS,
        rounds=TICKS.get(name, rounds),
        num_nodes=num_nodes,
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"{name}: {done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds (gossip: 30 ticks)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output", type=Path, default=SCRIPTS / "results" / "bench_floor.md")
    args = parser.parse_args()
    import torch

    lines = [
        "# Seconds per round against the machine's bound",
        "",
        f"- command: `python scripts/bench_floor.py --configs {' '.join(args.configs)} "
        f"--rounds {args.rounds} --repeats {args.repeats}`",
        f"- date: {datetime.datetime.now(datetime.UTC).isoformat(timespec='seconds')}",
        f"- torch {torch.__version__}, Python {platform.python_version()}, "
        f"{torch.get_num_threads()} threads; medians of {args.repeats} processes, each the "
        f"mean of {args.rounds} rounds after a warm-up",
        "",
        "| config | overrides | s / round | bound (s) | x bound | rows / node | stream GB/s "
        "| bmm GFLOP/s | peak MB |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in args.configs:
        runs = [measure(name, args.rounds) for _ in range(args.repeats)]

        def median(key: str, runs: list[dict[str, float]] = runs) -> float:
            return statistics.median(run[key] for run in runs)

        seconds, bound = median("seconds"), median("bound")
        lines.append(
            f"| {name} | `{' '.join(CONFIGS[name])}` | {seconds:.3f} | {bound:.3f} "
            f"| {seconds / bound if bound else math.inf:.2f} | {median('rows_per_node'):.1f} "
            f"| {median('stream_gbs'):.1f} | {median('matmul_gflops'):.1f} "
            f"| {median('peak_mb'):,.0f} |"
        )
        print(lines[-1], flush=True)
    args.output.write_text("\n".join(lines) + "\n")
    print(f"written to {args.output}")


if __name__ == "__main__":
    main()
