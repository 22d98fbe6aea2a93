"""Average consensus with compressed messages (Koloskova, Stich and Jaggi, ICML 2019, Fig. 2).

25 nodes, each with a vector of d = 2000 values drawn N(0, 1) (seed 0), on a ring and on a
random 4-regular graph (seed 0), Metropolis-Hastings weights (fedsim's ``mixing``: on these
regular graphs w_ij = 1/(deg + 1), 1/3 on the ring, 1/5 on the 4-regular graph, the rest on
the diagonal).  Every method runs through fedsim's own LocalBackend with ``Gossip`` plan
steps, as ``tests/test_choco.py`` does:

- exact gossip: x <- W x (no compression, step 1);
- CHOCO-Gossip (``Gossip(W, step_size=gamma, replicas=True)``, the replicas start at 0)
  with top-1% (k = 20), rand-1% (k = 20, biased, shared-seed indices) and QSGD with s = 256
  and s = 16 levels (CHOCO's contractive form, ``biased_scaling=True``), each on a grid of
  gamma;
- naive compressed gossip with top-1%: x_i + sum_j w_ij (C(x_j) - C(x_i)), the models
  themselves compressed (``Gossip(W, step_size=1, replicas=False)``).

Recorded every 25 rounds: the consensus error (1/n) ||X - 1 xbar^T||_F^2 (float64, xbar the
initial average), and the bytes each node has sent by then: rounds x degree x the
compressor's ``wire_bytes(2000)`` (every node sends one message to each neighbour a round).
A run that blows up (error > 1e8 or not finite) is stopped there.

Writes ``results/consensus.csv`` (graph, method, compressor, gamma, round, bytes_per_node,
error), ``results/consensus_best.csv`` (per graph and compressor the best gamma: the first below
1e-6, else the lowest final error) and ``results/consensus.png``.

Usage: python experiments/compression/consensus.py [--rounds 2500] [--replot]
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from fedsim.backends.local import LocalBackend
from fedsim.compression.qsgd import QSGD
from fedsim.compression.randomk import RandomK
from fedsim.compression.topk import TopK
from fedsim.data.datasets import Dataset
from fedsim.messages import MessageTransforms
from fedsim.models import logreg
from fedsim.plans import Gossip, RoundPlan
from fedsim.task import Task
from fedsim.topology import graphs, mixing
from fedsim.training.schedule import NodeData
from fedsim.training.sgd import SGD

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
NUM_NODES, FEATURES = 25, 199  # logistic regression 199 -> 10 classes: d = 2000 parameters
DIMENSION = 2000
EVERY = 25
DENSE_BYTES = 4 * DIMENSION
FLOOR = 1e-6

# (method, compressor label, compressor factory or None, replicas, gammas)
METHODS = [
    ("exact", "none", None, False, [1.0]),
    ("choco", "top-1%", lambda: TopK(ratio=0.01), True, [0.01, 0.02, 0.05, 0.1, 1.0]),
    ("choco", "rand-1%", lambda: RandomK(ratio=0.01), True, [0.0025, 0.005, 0.01, 0.02, 0.05]),
    ("choco", "qsgd-256", lambda: QSGD(levels=256, biased_scaling=True), True, [0.25, 0.5, 1.0]),
    ("choco", "qsgd-16", lambda: QSGD(levels=16, biased_scaling=True), True, [0.1, 0.2, 0.5, 1.0]),
    ("naive", "top-1%", lambda: TopK(ratio=0.01), False, [1.0]),
]


def consensus_task() -> Task:
    """A placeholder task whose model has 2000 parameters (nothing is trained)."""
    x, y = torch.zeros(NUM_NODES, FEATURES), torch.arange(NUM_NODES) % 10
    data = Dataset("zeros", x, y, x, y, num_classes=10)
    shards = NodeData.from_shards([np.array([node]) for node in range(NUM_NODES)])
    return Task(logreg((FEATURES,), 10), data, shards, SGD(lr=0.1), seed=0)


def run(task, weights, compressor, gamma, replicas, rounds, degree) -> list[dict]:
    backend = LocalBackend()
    backend.start(task, NUM_NODES, messages=MessageTransforms.of([compressor]))
    start = torch.randn(NUM_NODES, DIMENSION, generator=torch.Generator().manual_seed(0))
    backend.params.copy_(start)
    average = backend.params.double().mean(dim=0)
    wire = DENSE_BYTES if compressor is None else compressor.wire_bytes(DIMENSION)
    step = RoundPlan((Gossip(weights, step_size=gamma, replicas=replicas),))
    rows = [{"round": 0, "bytes_per_node": 0, "error": error(backend.params, average)}]
    for round_idx in range(rounds):
        backend.execute(step, round_idx)
        if (round_idx + 1) % EVERY == 0:
            value = error(backend.params, average)
            rows.append(
                {
                    "round": round_idx + 1,
                    "bytes_per_node": (round_idx + 1) * degree * wire,
                    "error": value,
                }
            )
            if not math.isfinite(value) or value > 1e8:
                break
    return rows


def error(params: torch.Tensor, average: torch.Tensor) -> float:
    return float((params.double() - average).square().sum(dim=1).mean())


def plot(frame: pd.DataFrame, best: pd.DataFrame, path: Path) -> None:
    figure = Figure(figsize=(11, 7.5), layout="constrained")
    axes = figure.subplots(2, 2, sharey=True)
    for column, graph in enumerate(frame["graph"].unique()):
        for _, choice in best[best["graph"] == graph].iterrows():
            curve = frame[
                (frame["graph"] == graph)
                & (frame["method"] == choice["method"])
                & (frame["compressor"] == choice["compressor"])
                & (frame["gamma"] == choice["gamma"])
            ]
            label = f"{choice['method']} {choice['compressor']}, gamma {choice['gamma']:g}"
            style = "--" if choice["method"] == "naive" else "-"
            axes[0, column].plot(curve["round"], curve["error"], style, label=label)
            sent = curve[curve["bytes_per_node"] > 0]  # round 0 has no place on a log axis
            axes[1, column].plot(
                sent["bytes_per_node"], sent["error"], style, marker=".", markersize=3, label=label
            )
        axes[0, column].set(title=f"{graph}, n = 25, d = 2000", xlabel="round")
        axes[1, column].set(xlabel="bytes sent per node (points: every 25 rounds)", xscale="log")
    for subplot in axes.flat:
        subplot.set(yscale="log")
        subplot.grid(alpha=0.3)
    for row in range(2):
        axes[row, 0].set(ylabel="(1/n) ||X - 1 xbar^T||_F^2")
    axes[0, 1].legend(loc="lower left", fontsize=8)
    figure.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2500)
    parser.add_argument("--replot", action="store_true", help="redraw from results/*.csv")
    args = parser.parse_args()
    if args.replot:
        frame = pd.read_csv(RESULTS / "consensus.csv")
        best = best_gammas(frame, args.rounds)
        best.to_csv(RESULTS / "consensus_best.csv", index=False, float_format="%.6g")
        plot(frame, best, RESULTS / "consensus.png")
        return
    torch.set_num_threads(1)
    RESULTS.mkdir(exist_ok=True)
    task = consensus_task()
    topologies = {
        "ring": graphs.ring(NUM_NODES, seed=0),
        "4-regular": graphs.regular(NUM_NODES, seed=0, degree=4),
    }
    frames, began = [], time.perf_counter()
    for graph_name, graph in topologies.items():
        weights = mixing.metropolis_hastings(graph)
        degree = max(dict(graph.degree()).values())
        for method, label, factory, replicas, gammas in METHODS:
            for gamma in gammas:
                compressor = factory() if factory else None
                rows = run(task, weights, compressor, gamma, replicas, args.rounds, degree)
                frame = pd.DataFrame(rows).assign(
                    graph=graph_name, method=method, compressor=label, gamma=gamma
                )
                frames.append(frame)
                print(
                    f"{graph_name:9s} {method:5s} {label:8s} gamma {gamma:<5g} "
                    f"error {rows[-1]['error']:.3g} at round {rows[-1]['round']} "
                    f"({time.perf_counter() - began:.0f} s)",
                    flush=True,
                )
    columns = ["graph", "method", "compressor", "gamma", "round", "bytes_per_node", "error"]
    frame = pd.concat(frames, ignore_index=True)[columns]
    frame.to_csv(RESULTS / "consensus.csv", index=False, float_format="%.6g")
    best = best_gammas(frame, args.rounds)
    best.to_csv(RESULTS / "consensus_best.csv", index=False, float_format="%.6g")
    plot(frame, best, RESULTS / "consensus.png")
    print(best.to_string(index=False))


def best_gammas(frame: pd.DataFrame, rounds: int) -> pd.DataFrame:
    """Per graph, method and compressor: the gamma that first gets the error below 1e-6, or
    if none does, the one with the lowest error after all rounds (a run stopped early counts as
    diverged); with its error every 500 rounds."""
    keys = ["graph", "method", "compressor", "gamma"]
    last = frame.sort_values("round").groupby(keys).last().reset_index()
    last.loc[last["round"] < rounds, "error"] = np.inf
    # Several gammas may reach the float32 floor: then the first to get below 1e-6 wins.
    below = frame[frame["error"] < FLOOR].groupby(keys)["round"].min().rename("reached")
    last = last.join(below, on=keys).fillna({"reached": np.inf})
    last = last.sort_values(["reached", "error"])
    best = last.groupby(["graph", "method", "compressor"], sort=False).head(1)
    rows = []
    for _, choice in best.iterrows():
        curve = frame[
            (frame["graph"] == choice["graph"])
            & (frame["method"] == choice["method"])
            & (frame["compressor"] == choice["compressor"])
            & (frame["gamma"] == choice["gamma"])
        ].set_index("round")["error"]
        row = {key: choice[key] for key in ("graph", "method", "compressor", "gamma")}
        row.update({f"error_{r}": curve.get(r, np.nan) for r in range(0, rounds + 1, 500)})
        row["round_below_1e-6"] = choice["reached"]
        row["bytes_per_node_per_round"] = int(choice["bytes_per_node"] / choice["round"])
        rows.append(row)
    order = {"exact": 0, "choco": 1, "naive": 2}
    result = pd.DataFrame(rows)
    return result.sort_values(
        ["graph", "method", "compressor"],
        key=lambda c: c.map(order) if c.name == "method" else c,
        ascending=[False, True, False],
        kind="stable",
    )


if __name__ == "__main__":
    main()
