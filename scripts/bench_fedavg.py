"""Benchmark one FedAvg workload three ways: the fedsim CLI, its per-node loop, bare torch.

Every run is a fresh subprocess, so interpreter start and imports count alike for all
ways; the harness takes each child's wall time around it and its peak RSS from
``os.wait4``.  Per-round time comes from the child (fedsim's ``timings.train_s / rounds``
in ``summary.json``, the bare script's ``per_round_s``).

Usage::

    python scripts/bench_fedavg.py [--workloads small,large,cnn] [--ways fedsim,fedsim_loop,bare]
                                   [--repeats 3] [--results-dir scripts/results]

Prints a table of medians and ratios to bare, and writes it as markdown
(``bench_fedavg.md``) and the raw runs as CSV (``bench_fedavg.csv``) to the results dir.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
from bare_fedavg import WORKLOADS, Workload
from rich.console import Console
from rich.table import Table

SCRIPTS_DIR = Path(__file__).resolve().parent
WAYS = ("fedsim", "fedsim_loop", "bare")
STDERR_TAIL_LINES = 40
console = Console(stderr=True)


@dataclass(frozen=True)
class Measurement:
    """One child run: the harness's wall time, peak RSS and CPU time, the child's own numbers.

    ``load_before`` (the 1-minute load average as the run starts) helps spot runs slowed
    by other work on the machine.
    """

    workload: str
    way: str
    repeat: int
    total_s: float
    per_round_s: float
    peak_rss_mib: float
    accuracy: float
    rounds: int
    cpu_s: float
    load_before: float


def fedsim_command(workload: Workload, vectorise: bool, run_dir: Path) -> list[str]:
    """The ``fedsim run`` command line for ``workload``, writing into ``run_dir``."""
    return [
        str(Path(sys.executable).parent / "fedsim"),
        "run",
        "strategy=fedavg",
        f"strategy.sample_size={workload.sample_size}",
        f"strategy.local_epochs={workload.local_epochs}",
        f"optimizer.lr={workload.learning_rate}",
        "optimizer.momentum=0",
        f"optimizer.batch_size={workload.batch_size}",
        *(
            ["model=lenet5", "data.image_size=28"]
            if workload.model == "lenet5"
            else ["model=mlp", f"model.hidden=[{workload.hidden}]"]
        ),
        "data=digits",
        f"data.tile={workload.tile}",
        f"data.test_fraction={workload.test_fraction}",
        "partition=iid",
        f"partition.samples_per_node={workload.samples_per_node}",
        f"num_nodes={workload.num_nodes}",
        f"rounds={workload.rounds}",
        f"eval_every={workload.rounds}",
        "seed=0",
        "eval_nodes=1",  # the bare script evaluates only the global model
        f"backend.vectorise={str(vectorise).lower()}",
        f"hydra.run.dir={run_dir}",
    ]


def run_child(command: list[str], log_dir: Path) -> tuple[float, os.struct_rusage, str]:
    """Run ``command`` to completion; return its wall seconds, resource usage and stdout.

    Output goes to files rather than pipes so that nothing needs draining while
    ``os.wait4`` blocks; a non-zero exit raises with the tail of the child's stderr.
    """
    stdout_path, stderr_path = log_dir / "stdout.txt", log_dir / "stderr.txt"
    env = {**os.environ, "HYDRA_FULL_ERROR": "1"}
    with stdout_path.open("wb") as stdout, stderr_path.open("wb") as stderr:
        start = time.perf_counter()
        process = subprocess.Popen(command, stdout=stdout, stderr=stderr, env=env)
        _, status, usage = os.wait4(process.pid, 0)
        wall_s = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        tail = stderr_path.read_text(errors="replace").splitlines()[-STDERR_TAIL_LINES:]
        raise RuntimeError(
            f"child exited with {process.returncode}: {shlex.join(command)}\n" + "\n".join(tail)
        )
    return wall_s, usage, stdout_path.read_text()


def per_round_and_accuracy(
    way: str, workload: Workload, stdout: str, run_dir: Path
) -> tuple[float, float]:
    """The child's own per-round seconds and final accuracy, from its JSON line or summary."""
    if way == "bare":
        record = json.loads(stdout.strip().splitlines()[-1])
        return record["per_round_s"], record["accuracy"]
    summary = json.loads((run_dir / "summary.json").read_text())
    if summary["rounds_completed"] != workload.rounds:
        raise RuntimeError(
            f"{way} completed {summary['rounds_completed']} of {workload.rounds} rounds"
        )
    return summary["timings"]["train_s"] / workload.rounds, summary["final"]["accuracy"]


def measure(workload_name: str, way: str, repeat: int) -> Measurement:
    """Run ``way`` once on ``workload_name`` in a fresh subprocess."""
    workload = WORKLOADS[workload_name]
    load_before = os.getloadavg()[0]
    work_dir = Path(tempfile.mkdtemp(prefix=f"bench-{workload_name}-{way}-"))
    run_dir = work_dir / "run"
    if way == "bare":
        script = str(SCRIPTS_DIR / "bare_fedavg.py")
        command = [sys.executable, script, f"--workload={workload_name}", "--seed=0"]
    else:
        command = fedsim_command(workload, vectorise=way == "fedsim", run_dir=run_dir)
    try:
        wall_s, usage, stdout = run_child(command, work_dir)
        per_round_s, accuracy = per_round_and_accuracy(way, workload, stdout, run_dir)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    return Measurement(
        workload=workload_name,
        way=way,
        repeat=repeat,
        total_s=wall_s,
        per_round_s=per_round_s,
        peak_rss_mib=usage.ru_maxrss / 1024,  # KiB on Linux
        accuracy=accuracy,
        rounds=workload.rounds,
        cpu_s=usage.ru_utime + usage.ru_stime,
        load_before=load_before,
    )


def summarise(
    runs: list[Measurement], workloads: list[str], ways: list[str]
) -> list[dict[str, Any]]:
    """One row of medians per (workload, way), with ratios to bare's medians."""
    rows: list[dict[str, Any]] = []
    for workload in workloads:
        medians: dict[str, dict[str, float]] = {}
        for way in ways:
            chosen = [run for run in runs if run.workload == workload and run.way == way]
            medians[way] = {
                name: statistics.median(getattr(run, name) for run in chosen)
                for name in ("total_s", "per_round_s", "peak_rss_mib", "accuracy")
            }
        bare = medians.get("bare")
        for way in ways:
            own = medians[way]
            rows.append(
                {
                    "workload": workload,
                    "way": way,
                    **own,
                    "total_vs_bare": own["total_s"] / bare["total_s"] if bare else None,
                    "per_round_vs_bare": (
                        own["per_round_s"] / bare["per_round_s"] if bare else None
                    ),
                }
            )
    return rows


HEADERS = (
    "workload",
    "way",
    "total s",
    "ms/round",
    "RSS MiB",
    "accuracy",
    "total/bare",
    "round/bare",
)


def format_row(row: dict[str, Any]) -> list[str]:
    """The table cells of one summary row."""

    def ratio(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}x"

    return [
        row["workload"],
        row["way"],
        f"{row['total_s']:.2f}",
        f"{row['per_round_s'] * 1e3:.2f}",
        f"{row['peak_rss_mib']:.0f}",
        f"{row['accuracy']:.3f}",
        ratio(row["total_vs_bare"]),
        ratio(row["per_round_vs_bare"]),
    ]


def print_table(rows: list[dict[str, Any]], repeats: int) -> None:
    """Print the summary with rich, on stdout."""
    table = Table(title=f"FedAvg on digits, medians of {repeats} runs")
    for index, header in enumerate(HEADERS):
        table.add_column(header, justify="left" if index < 2 else "right")
    for row in rows:
        table.add_row(*format_row(row))
    # Wide enough for every column even where stdout is not a terminal (rich assumes 80).
    Console(width=max(Console().width, 100)).print(table)


def cpu_description() -> str:
    """The CPU model (``/proc/cpuinfo`` where ``platform.processor()`` is bare) and count."""
    name = platform.processor()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    return f"{name or 'unknown'}, {os.cpu_count()} logical CPUs"


def write_results(
    rows: list[dict[str, Any]], runs: list[Measurement], repeats: int, results_dir: Path
) -> None:
    """Write the summary as markdown and the raw runs as CSV into ``results_dir``."""
    results_dir.mkdir(parents=True, exist_ok=True)
    lines = [
        "# FedAvg benchmark: fedsim vs bare torch",
        "",
        f"- command: `{shlex.join([Path(sys.executable).name, *sys.argv])}`",
        f"- date: {datetime.datetime.now(datetime.UTC).isoformat(timespec='seconds')}",
        f"- torch {torch.__version__}, Python {platform.python_version()}, "
        f"torch threads {torch.get_num_threads()}",
        f"- CPU: {cpu_description()}",
        f"- medians of {repeats} runs; total = subprocess wall time, per round = child's "
        "round-loop time (fedsim: timings.train_s) / rounds",
        "",
        "| " + " | ".join(HEADERS) + " |",
        "|" + "|".join(["---"] * 2 + ["---:"] * (len(HEADERS) - 2)) + "|",
    ]
    lines += ["| " + " | ".join(format_row(row)) + " |" for row in rows]
    (results_dir / "bench_fedavg.md").write_text("\n".join(lines) + "\n")
    with (results_dir / "bench_fedavg.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, [field.name for field in fields(Measurement)])
        writer.writeheader()
        writer.writerows(asdict(run) for run in runs)


def parse_choices(text: str, legal: tuple[str, ...] | list[str], option: str) -> list[str]:
    """Split a comma-separated option and check every item against ``legal``."""
    chosen = [item.strip() for item in text.split(",") if item.strip()]
    unknown = [item for item in chosen if item not in legal]
    if not chosen or unknown:
        raise SystemExit(f"{option}={text!r}: choose from {','.join(legal)}")
    return chosen


def main() -> None:
    """Parse the CLI, run every (repeat, workload, way) in turn and report."""
    parser = argparse.ArgumentParser(description="Benchmark FedAvg: fedsim vs bare torch.")
    parser.add_argument("--workloads", default="small,large,cnn", help="comma-separated")
    parser.add_argument("--ways", default=",".join(WAYS), help="comma-separated")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--results-dir", type=Path, default=SCRIPTS_DIR / "results")
    args = parser.parse_args()
    workloads = parse_choices(args.workloads, sorted(WORKLOADS), "--workloads")
    ways = parse_choices(args.ways, WAYS, "--ways")
    if args.repeats < 1:
        raise SystemExit(f"--repeats={args.repeats} must be >= 1")

    runs: list[Measurement] = []
    # Ways interleave within each repeat so that drift in machine load hits all alike.
    for repeat in range(args.repeats):
        for workload in workloads:
            for way in ways:
                try:
                    run = measure(workload, way, repeat)
                except (RuntimeError, OSError, KeyError, ValueError) as error:
                    console.print(f"{workload} {way} #{repeat} failed:", style="bold red")
                    console.print(str(error), markup=False, highlight=False)
                    raise SystemExit(1) from error
                console.log(
                    f"{workload:5} {way:11} #{repeat}: {run.total_s:6.2f} s total, "
                    f"{run.per_round_s * 1e3:7.2f} ms/round, {run.cpu_s:6.2f} s CPU, "
                    f"{run.peak_rss_mib:5.0f} MiB, "
                    f"accuracy {run.accuracy:.3f}"
                )
                runs.append(run)
    rows = summarise(runs, workloads, ways)
    print_table(rows, args.repeats)
    write_results(rows, runs, args.repeats, args.results_dir)
    console.log(f"wrote {args.results_dir / 'bench_fedavg.md'} and bench_fedavg.csv")


if __name__ == "__main__":
    main()
