"""Per-round time of FedAvg and D-PSGD at two git revisions of fedsim, measured in one run.

Each revision is checked out into a temporary git worktree; every run is a fresh
``python -m fedsim.cli run`` with that worktree first on ``PYTHONPATH``, the revisions
alternating so that load on the machine falls on both alike.  Per-round time is fedsim's
own ``timings.train_s / rounds`` (plan, execute, account, clock: everything but evaluation).
The table gives the median of ``--repeats`` runs and the ratio of the new revision to the
old.

Usage: python scripts/bench_revisions.py OLD NEW [--repeats 5] [--rounds 20]
(e.g. ``python scripts/bench_revisions.py 00d8dce HEAD``)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
WORKLOADS = {
    "fedavg": ["strategy=fedavg"],
    "dpsgd": ["strategy=dpsgd", "topology=regular"],
}


def per_round(source: Path, overrides: list[str], rounds: int) -> float:
    """Seconds per round of one fresh run of the fedsim in ``source``."""
    with tempfile.TemporaryDirectory() as run_dir:
        environment = {**os.environ, "PYTHONPATH": str(source)}
        run = subprocess.run(
            [sys.executable, "-m", "fedsim.cli", "run", *overrides, f"rounds={rounds}",
             f"eval_every={rounds}", "progress=false", f"hydra.run.dir={run_dir}"],
            capture_output=True, text=True, env=environment, cwd=run_dir,
        )  # fmt: skip
        if run.returncode != 0:
            raise RuntimeError(f"{source} exit {run.returncode}:\n{run.stderr[-3000:]}")
        summary = json.loads((Path(run_dir) / "summary.json").read_text())
    return summary["timings"]["train_s"] / rounds


def worktree(revision: str, into: Path) -> Path:
    subprocess.run(
        ["git", "-C", str(REPO), "worktree", "add", "--detach", str(into), revision],
        check=True, capture_output=True,
    )  # fmt: skip
    return into


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old")
    parser.add_argument("new")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        trees = {
            name: worktree(name, Path(scratch) / str(i))
            for i, name in enumerate((args.old, args.new))
        }
        try:
            times: dict[tuple[str, str], list[float]] = {}
            for _ in range(args.repeats):
                for workload, overrides in WORKLOADS.items():
                    for revision, tree in trees.items():
                        seconds = per_round(tree, overrides, args.rounds)
                        times.setdefault((workload, revision), []).append(seconds)
        finally:
            for tree in trees.values():
                subprocess.run(
                    ["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)],
                    check=False,
                )
    print(f"| workload | {args.old} s/round | {args.new} s/round | new / old |")
    print("|---|---|---|---|")
    for workload in WORKLOADS:
        old, new = (statistics.median(times[workload, r]) for r in (args.old, args.new))
        print(f"| {workload} | {old:.4f} | {new:.4f} | {new / old:.2f}x |")


if __name__ == "__main__":
    main()
