"""Does fedsim's memory estimate bound the peak resident memory of ``fedsim run``?

Each configuration of the grid runs as ``fedsim run`` in a fresh subprocess (the CLI's
``main``, with :func:`fedsim.build.check_memory` wrapped to write the estimate it is
given to a JSON file: the job's own estimate, made after the data set is loaded).  The
harness takes the child's peak resident memory from its own ``VmHWM`` (``os.wait4``'s
``ru_maxrss`` off Linux, which also counts the forking harness).  The table gives the
estimate of the peak (``MemoryEstimate.peak``: the process's resident memory when the
run was checked plus what the run will still allocate; before that field existed,
``MemoryEstimate.total``), the measured peak (median and largest of ``--repeats`` runs),
their ratios, and the large part of the estimate that dominates.  A child that grows past
``--cap-gib`` is killed (and its virtual memory is limited to the cap plus 3 GiB), so a
bad estimate cannot take the machine down.  Run one benchmark at a time: the children
take up to 4 GiB each, one after another, about 5 minutes for the grid on 2 cores.
``MALLOC_MMAP_THRESHOLD_=131072`` in the environment shows the peaks without glibc
keeping freed heap blocks.

Usage::

    python scripts/memory_bound.py [--only NAME ...] [--repeats 1] [--cap-gib 5]
                                   [--out scripts/results/memory_bound.md] [--raw FILE.json]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"
MIB = 2**20
VIRTUAL_SLACK = 3 * 2**30  # address space torch and its thread pools reserve but never touch
# Each configuration: a name and its overrides.  Sizes are chosen so that every child
# stays under 5 GiB (the audit's run, 200,000 nodes and data.tile=150, peaked at 15.6 GB;
# 50,000 nodes is a quarter of it).
GRID: list[tuple[str, list[str]]] = [
    ("fedavg mlp 100 nodes", ["num_nodes=100"]),
    ("fedavg mlp 20k", ["num_nodes=20000", "data.tile=15"]),
    ("fedavg mlp 30k", ["num_nodes=30000", "data.tile=22"]),
    ("fedavg mlp 50k", ["num_nodes=50000", "data.tile=36"]),
    ("fedavg mlp 20k momentum", ["num_nodes=20000", "data.tile=15", "optimizer.momentum=0.9"]),
    ("fedavg mlp 20k eval all nodes", ["num_nodes=20000", "data.tile=15", "eval_nodes=20000"]),
    ("fedavg logreg 100 nodes", ["num_nodes=100", "model=logreg"]),
    ("fedavg logreg 100k", ["num_nodes=100000", "data.tile=70", "model=logreg"]),
    ("fedavg logreg 200k", ["num_nodes=200000", "data.tile=140", "model=logreg"]),
    (
        "fedavg logreg 20k, 10 examples each",
        ["num_nodes=20000", "data.tile=150", "model=logreg", "partition.samples_per_node=10"],
    ),
    (
        "fedavg logreg 20k init independent",
        ["num_nodes=20000", "data.tile=15", "model=logreg", "init=independent"],
    ),
    (
        "fedavg lenet5 2k (per-node loop)",
        ["num_nodes=2000", "data.tile=2", "model=lenet5", "data.image_size=28", "eval_nodes=10"],
    ),
    ("dpsgd mlp 2k", ["strategy=dpsgd", "topology=regular", "num_nodes=2000", "data.tile=2"]),
    ("dpsgd mlp 20k", ["strategy=dpsgd", "topology=regular", "num_nodes=20000", "data.tile=15"]),
    (
        "dpsgd mlp 4k variance corrected",
        [
            "strategy=dpsgd",
            "topology=regular",
            "num_nodes=4000",
            "data.tile=3",
            "aggregator=variance_corrected",
        ],
    ),
    (
        "dpsgd mlp 10k momentum chunks of 1024",
        [
            "strategy=dpsgd",
            "topology=regular",
            "num_nodes=10000",
            "data.tile=8",
            "optimizer.momentum=0.9",
            "backend.chunk_size=1024",
        ],
    ),
    (
        "dpsgd mlp 1k private",
        ["strategy=dpsgd", "topology=regular", "num_nodes=1000", "privacy=local"],
    ),
    (
        "gossip (push-merge) mlp 5k",
        ["strategy=gossip", "topology=regular", "num_nodes=5000", "data.tile=4"],
    ),
    ("gossip learning mlp 10k", ["strategy=gossip_learning", "num_nodes=10000", "data.tile=8"]),
    (
        "dpsgd mlp 2k median",
        [
            "strategy=dpsgd",
            "topology=regular",
            "num_nodes=2000",
            "data.tile=2",
            "aggregator=median",
        ],
    ),
    ("scaffold mlp 5k", ["strategy=scaffold", "num_nodes=5000", "data.tile=4"]),
    ("fedadam mlp 20k", ["strategy=fedadam", "num_nodes=20000", "data.tile=15"]),
    ("dpsgd mlp 5k", ["strategy=dpsgd", "topology=regular", "num_nodes=5000", "data.tile=4"]),
    (
        "dpsgd mlp 100k",
        ["strategy=dpsgd", "topology=regular", "num_nodes=100000", "data.tile=70"],
    ),
    (
        "dpsgd logreg 1m",
        [
            "strategy=dpsgd",
            "topology=regular",
            "num_nodes=1000000",
            "data.tile=700",
            "model=logreg",
            "backend.chunk_size=4096",
        ],
    ),
    (
        "dpsgd mlp 5k topk error feedback",
        [
            "strategy=dpsgd",
            "topology=regular",
            "num_nodes=5000",
            "data.tile=4",
            "compression=topk",
            "compression.error_feedback=true",
        ],
    ),
    (
        "fedavg mlp 20k topk error feedback",
        [
            "num_nodes=20000",
            "data.tile=15",
            "strategy.sample_size=2000",
            "compression=topk",
            "compression.error_feedback=true",
        ],
    ),
]
COMMON = ["rounds=2", "eval_every=1", "progress=false"]
# The child: fedsim's CLI, with the memory check wrapped to save the estimate it receives.
CHILD = """
import dataclasses, json, os, sys
import fedsim.build
from fedsim.cli import main

checked = fedsim.build.check_memory

def check_memory(estimate, device):
    record = dataclasses.asdict(estimate)
    for name in ("total", "to_allocate", "peak", "training", "private_training", "kept"):
        if hasattr(estimate, name):
            record[name] = getattr(estimate, name)
    with open(os.environ["MEMORY_ESTIMATE"], "w") as file:
        json.dump(record, file)
    return checked(estimate, device)

fedsim.build.check_memory = check_memory
code = main(["run", *sys.argv[1:]])
status = "/proc/self/status"  # VmHWM: this process's own peak (ru_maxrss keeps the forker's)
if os.path.exists(status):
    with open(status) as file:
        peak = next(line for line in file if line.startswith("VmHWM:")).split()[1]
    with open(os.environ["MEMORY_ESTIMATE"]) as file:
        record = json.load(file)
    record["own_peak"] = int(peak) * 1024
    with open(os.environ["MEMORY_ESTIMATE"], "w") as file:
        json.dump(record, file)
sys.exit(code)
"""
# The parts of the estimate made of tensors as large as the federation's.
LARGE_PARTS = (
    "private_training",
    "communication",
    "evaluation_rows",
    "checkpoint",
    "finite_check",
)


def run_child(overrides: list[str], cap: int) -> tuple[int, dict]:
    """Run ``fedsim run overrides`` in a fresh process; (its peak RSS in bytes, the estimate)."""
    with tempfile.TemporaryDirectory(prefix="memory-bound-") as work:
        estimate_path, log_path = Path(work) / "estimate.json", Path(work) / "stderr.txt"
        command = [sys.executable, "-c", CHILD, *overrides, f"hydra.run.dir={work}/run"]
        env = {**os.environ, "MEMORY_ESTIMATE": str(estimate_path), "HYDRA_FULL_ERROR": "1"}

        def limit() -> None:
            resource.setrlimit(resource.RLIMIT_AS, (cap + VIRTUAL_SLACK, cap + VIRTUAL_SLACK))

        with log_path.open("wb") as log:
            child = subprocess.Popen(
                command, stdout=subprocess.DEVNULL, stderr=log, env=env, preexec_fn=limit
            )
            killed = _watch(child.pid, cap)
            _, status, usage = os.wait4(child.pid, 0)
        if killed.is_set() or os.waitstatus_to_exitcode(status) != 0:
            reason = "killed at the cap" if killed.is_set() else f"exit {status}"
            tail = log_path.read_text(errors="replace").splitlines()[-20:]
            raise RuntimeError(f"{reason}: {shlex.join(overrides)}\n" + "\n".join(tail))
        estimate = json.loads(estimate_path.read_text())
        # The run's own peak where Linux says it (VmHWM); ru_maxrss counts the resident size
        # of this harness too, since the child is forked from it.
        return estimate.pop("own_peak", usage.ru_maxrss * 1024), estimate


def _watch(pid: int, cap: int) -> threading.Event:
    """Poll the child's resident memory; kill it if it passes ``cap`` bytes."""
    killed = threading.Event()

    def poll() -> None:
        status = Path(f"/proc/{pid}/status")
        while True:
            try:
                lines = status.read_text().splitlines()
            except (OSError, ProcessLookupError):
                return
            resident = next((line for line in lines if line.startswith("VmRSS:")), None)
            if resident is None:  # a zombie: it has exited
                return
            if int(resident.split()[1]) * 1024 > cap:
                killed.set()
                os.kill(pid, 9)
                return
            time.sleep(0.01)

    threading.Thread(target=poll, daemon=True).start()
    return killed


def largest_part(estimate: dict) -> str:
    """The large part that sets the estimate's peak (before the fix: the largest transient)."""
    names = (
        LARGE_PARTS
        if "evaluation_rows" in estimate
        else ("training", "communication", "evaluation", "initialisation")
    )
    present = {name: estimate.get(name, 0) for name in names}
    return max(present, key=lambda name: present[name])


def measure(name: str, overrides: list[str], repeats: int, cap: int) -> dict:
    """Median and largest peak of ``repeats`` runs of one configuration, and its estimate."""
    runs = [run_child([*COMMON, *overrides], cap) for _ in range(repeats)]
    estimate = runs[-1][1]
    return {
        "config": name,
        "overrides": " ".join(overrides),
        "estimate": estimate.get("peak", estimate["total"]),
        "resident": estimate.get("resident"),
        "peak": statistics.median(peak for peak, _ in runs),
        "max_peak": max(peak for peak, _ in runs),
        "largest_part": largest_part(estimate),
        "parts": estimate,
    }


def table(rows: list[dict]) -> list[str]:
    """Markdown rows: the estimate, the measured peak, their ratios (MiB)."""
    lines = [
        "| config | overrides | estimate | resident at check | peak (median) | peak (max) "
        "| max peak / estimate | estimate / median peak | largest part |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['config']} | `{row['overrides']}` | failed: {row['error']} |")
            continue
        resident = "-" if row["resident"] is None else f"{row['resident'] / MIB:,.0f}"
        lines.append(
            f"| {row['config']} | `{row['overrides']}` | {row['estimate'] / MIB:,.0f} "
            f"| {resident} | {row['peak'] / MIB:,.0f} | {row['max_peak'] / MIB:,.0f} "
            f"| {row['max_peak'] / row['estimate']:.2f} | {row['estimate'] / row['peak']:.2f} "
            f"| {row['largest_part']} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", default=None, help="configs whose name contains one")
    parser.add_argument("--repeats", type=int, default=1, help="runs per config (median)")
    parser.add_argument("--cap-gib", type=float, default=5.0, help="kill a child above this")
    parser.add_argument("--out", type=Path, default=RESULTS / "memory_bound.md")
    parser.add_argument("--raw", type=Path, default=None, help="also write every row as JSON")
    args = parser.parse_args()
    grid = [
        (name, overrides)
        for name, overrides in GRID
        if args.only is None or any(part in name for part in args.only)
    ]
    cap = int(args.cap_gib * 2**30)
    rows = []
    for name, overrides in grid:
        try:
            rows.append(measure(name, overrides, args.repeats, cap))
        except RuntimeError as error:  # recorded, and the grid goes on
            print(error, file=sys.stderr)
            failed = str(error).splitlines()[0]
            rows.append({"config": name, "overrides": " ".join(overrides), "error": failed})
        print(table(rows)[-1], file=sys.stderr, flush=True)
    measured = [row for row in rows if "error" not in row]
    if not measured:
        raise SystemExit("no configuration ran")
    worst = max(measured, key=lambda row: row["max_peak"] / row["estimate"])
    loosest = max(measured, key=lambda row: row["estimate"] / row["peak"])
    lines = [
        "# Memory estimate against measured peak resident memory",
        "",
        f"- command: `{shlex.join(['python', 'scripts/memory_bound.py', *sys.argv[1:]])}`",
        f"- date: {datetime.datetime.now(datetime.UTC).isoformat(timespec='seconds')}",
        f"- torch {torch.__version__}, Python {platform.python_version()}, "
        f"{os.cpu_count()} logical CPUs",
        f"- every config also sets `{' '.join(COMMON)}`; peak: `VmHWM` of the `fedsim run` "
        f"process, median and largest of {args.repeats} run(s); MiB",
        f"- MALLOC_MMAP_THRESHOLD_={os.environ.get('MALLOC_MMAP_THRESHOLD_', '(unset)')}",
        "",
        *table(rows),
        "",
        f"worst max peak / estimate: {worst['max_peak'] / worst['estimate']:.2f} "
        f"({worst['config']}); largest estimate / median peak: "
        f"{loosest['estimate'] / loosest['peak']:.2f} ({loosest['config']})",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    if args.raw is not None:
        args.raw.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
