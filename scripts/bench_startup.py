"""Start-up of fedsim at two git revisions, against importing torch, measured in one run.

What a user waits for before the first round: ``fedsim run rounds=0`` (compose, check,
build, evaluate once, write) and the default ``fedsim run`` (50 FedAvg rounds of digits),
each a fresh process with the revision's worktree first on ``PYTHONPATH``, beside a bare
``python -c "import torch"`` (the floor: every run imports torch).  Runs alternate between
revisions so that load falls on both alike; the table gives medians of ``--repeats`` runs,
fedsim's own share (the run less importing torch) and the new revision's ratio to the old.

Usage: python scripts/bench_startup.py OLD NEW [--repeats 5]
(e.g. ``python scripts/bench_startup.py c1e029a HEAD``)
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_revisions import REPO, worktree

COMMANDS = {
    "fedsim run rounds=0": ["-m", "fedsim.cli", "run", "rounds=0"],
    "fedsim run (50 rounds)": ["-m", "fedsim.cli", "run"],
}
TORCH = "import torch"


def wall(source: Path | None, arguments: list[str]) -> float:
    """Seconds of one fresh ``python arguments`` with ``source`` first on the path."""
    with tempfile.TemporaryDirectory() as run_dir:
        environment = {**os.environ, "PYTHONPATH": str(source or "")}
        if arguments[:1] == ["-m"]:
            arguments = [*arguments, "progress=false", f"hydra.run.dir={run_dir}/run"]
        started = time.perf_counter()
        run = subprocess.run(
            [sys.executable, *arguments], capture_output=True, text=True, env=environment,
            cwd=run_dir,
        )  # fmt: skip
        seconds = time.perf_counter() - started
    if run.returncode != 0:
        raise RuntimeError(f"{source} {arguments} exit {run.returncode}:\n{run.stderr[-3000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old")
    parser.add_argument("new")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    times: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        trees = {
            name: worktree(name, Path(scratch) / str(i))
            for i, name in enumerate((args.old, args.new))
        }
        try:
            for _ in range(args.repeats):
                times.setdefault((TORCH, ""), []).append(wall(None, ["-c", TORCH]))
                for label, arguments in COMMANDS.items():
                    for revision, tree in trees.items():
                        times.setdefault((label, revision), []).append(wall(tree, arguments))
        finally:
            for tree in trees.values():
                subprocess.run(
                    ["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)],
                    check=False,
                )
    torch = statistics.median(times[TORCH, ""])
    print(f'`python -c "{TORCH}"`: {torch:.2f} s (median of {args.repeats})\n')
    print(
        f"| command | {args.old} s | {args.new} s | {args.old} less torch | "
        f"{args.new} less torch | new / old |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for label in COMMANDS:
        old, new = (statistics.median(times[label, r]) for r in (args.old, args.new))
        print(
            f"| {label} | {old:.2f} | {new:.2f} | {old - torch:.2f} | {new - torch:.2f} | "
            f"{new / old:.2f}x |"
        )


if __name__ == "__main__":
    main()
