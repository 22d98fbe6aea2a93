"""DICE on digits (spec seed-wave-2.md section 7): one-hop DICE-E against the counterfactual
DICE-GT, a label-flipping node's influence, and influence against graph distance.

D-PSGD (adapt-then-combine, one plain-SGD step of batch 16 per round, as fedsim's
``strategy=dpsgd strategy.local_steps=1``) of softmax regression (fedsim's ``logreg``) on 16
nodes holding IID shares of digits; node 5 trains on flipped labels (fedsim's ``LabelFlip``);
a ring and the exponential graph (and a Barabasi-Albert graph for the asymmetry between hubs
and leaves), Metropolis-Hastings weights.  Run from the repo root:
``python experiments/seed_wave_2/dice/dice.py`` (about a minute on one core).
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import networkx as nx
import numpy as np
import pandas as pd
import torch

from fedsim.analysis.influence import (
    DecentralizedRun,
    cascade_estimate,
    cascade_ground_truth,
    classification_loss,
    mixing_matrices,
    node_batches,
    one_hop_estimate,
    one_hop_ground_truth,
)
from fedsim.attacks.label_flip import LabelFlip
from fedsim.data.datasets import digits
from fedsim.models import logreg
from fedsim.models.init import initialize
from fedsim.partitions import iid
from fedsim.topology import Topology, barabasi_albert, exponential, metropolis_hastings, ring
from fedsim.training.layout import ParameterLayout

NODES, FLIPPED, BATCH, SEED = 16, 5, 16, 0
WARMUP = 40  # rounds of D-PSGD before the batches whose influence is measured
MEASURED = range(WARMUP, WARMUP + 10, 2)  # five steps, every node's batch at each
RATES = (0.01, 0.1, 1.0)
GRAPHS = {"ring": ring, "exponential": exponential}
BUILDERS = {**GRAPHS, "barabasi_albert": barabasi_albert}  # the last for the asymmetry only
CASCADE_RATE, CASCADE_STEPS = 0.1, (WARMUP, WARMUP + 5)
OUT = Path(__file__).parent / "results"


def setting(
    graph_name: str, lr: float, steps: int
) -> tuple[DecentralizedRun, torch.Tensor, nx.Graph, tuple[torch.Tensor, torch.Tensor]]:
    """The run on ``graph_name`` with step size ``lr``, its trajectory, graph and test set."""
    dataset = digits()
    shards = iid(dataset.train_y.numpy(), NODES, SEED)
    attack = LabelFlip(nodes=[FLIPPED])
    attack.prepare(NODES, SEED)
    dataset, shards = attack.poison(dataset, shards)
    topology = Topology(BUILDERS[graph_name](NODES, SEED), metropolis_hastings)
    model = logreg(dataset.input_shape, dataset.num_classes)
    initialize(model, "default", torch.Generator().manual_seed(SEED))
    initial = ParameterLayout.of(model).flatten(model).double().expand(NODES, -1).clone()
    batches = node_batches(dataset, shards, seed=SEED, num_steps=steps, batch_size=BATCH)
    mixing = mixing_matrices(topology, steps)
    run = DecentralizedRun(classification_loss(model), batches, mixing, lr)
    test = (dataset.test_x.double(), dataset.test_y)
    return run, run.trajectory(initial), topology.graph(0), test


def one_hop_rows() -> pd.DataFrame:
    rows = []
    for graph_name in GRAPHS:
        for lr in RATES:
            run, trajectory, _, test = setting(graph_name, lr, max(MEASURED) + 2)
            for step in MEASURED:
                for node in range(NODES):
                    rows.append({
                        "topology": graph_name, "lr": lr, "step": step, "node": node,
                        "flipped": node == FLIPPED,
                        "estimate": one_hop_estimate(run, trajectory, test, node, step),
                        "ground_truth": one_hop_ground_truth(run, trajectory, test, node, step),
                    })  # fmt: skip
    return pd.DataFrame(rows)


def cascade_rows() -> pd.DataFrame:
    rows = []
    for graph_name in GRAPHS:
        graph_steps = max(CASCADE_STEPS) + 1 + 8
        run, trajectory, graph, test = setting(graph_name, CASCADE_RATE, graph_steps)
        distance = dict(nx.all_pairs_shortest_path_length(graph))
        hops = nx.diameter(graph)
        for step in CASCADE_STEPS:
            for source in range(NODES):
                estimate = cascade_estimate(run, trajectory, test, source, step, hops)
                truth = cascade_ground_truth(run, trajectory, test, source, step, hops)
                for hop in range(hops + 1):
                    for node in range(NODES):
                        if hop and truth[hop, node] == 0 and estimate[hop, node] == 0:
                            continue
                        rows.append({
                            "topology": graph_name, "step": step, "source": source,
                            "flipped": source == FLIPPED, "hop": hop, "node": node,
                            "distance": distance[source][node],
                            "estimate": float(estimate[hop, node]),
                            "ground_truth": float(truth[hop, node]),
                        })  # fmt: skip
    return pd.DataFrame(rows)


def asymmetry_rows() -> pd.DataFrame:
    """One-hop influence of each node's batches on the other nodes, on a Barabasi-Albert graph
    (hubs and leaves), against the node's degree."""
    run, trajectory, graph, test = setting("barabasi_albert", CASCADE_RATE, max(MEASURED) + 2)
    rows = []
    for step in MEASURED:
        for node in range(NODES):
            estimate = cascade_estimate(run, trajectory, test, node, step, 1)
            truth = cascade_ground_truth(run, trajectory, test, node, step, 1)
            others = [k for k in range(NODES) if k != node]
            rows.append({
                "step": step, "node": node, "degree": graph.degree[node],
                "flipped": node == FLIPPED,
                "out_weight": float(1 - run.mixing[step][node, node]),
                "estimate": float(estimate[1, others].sum()),
                "ground_truth": float(truth[1, others].sum()),
            })  # fmt: skip
    return pd.DataFrame(rows)


def pearson(frame: pd.DataFrame) -> float:
    return float(np.corrcoef(frame["estimate"], frame["ground_truth"])[0, 1])


def summary(one_hop: pd.DataFrame, cascade: pd.DataFrame) -> str:
    lines = ["## One-hop DICE-E (official formula) against DICE-GT (counterfactual replay)", "",
             "| topology | lr | Pearson, all 80 batches | Pearson, honest nodes | "
             "norm(GT - E) / norm(GT) | flipped node: mean E / mean GT | "
             "flipped node: share of E > 0 | honest nodes: share of E > 0 |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for (graph_name, lr), group in one_hop.groupby(["topology", "lr"], sort=False):
        honest, flipped = group[~group.flipped], group[group.flipped]
        gap = np.linalg.norm(group.ground_truth - group.estimate) / np.linalg.norm(
            group.ground_truth
        )
        lines.append(
            f"| {graph_name} | {lr} | {pearson(group):.4f} | {pearson(honest):.4f} | {gap:.3f} | "
            f"{flipped.estimate.mean():+.3g} / {flipped.ground_truth.mean():+.3g} | "
            f"{(flipped.estimate > 0).mean():.0%} | {(honest.estimate > 0).mean():.0%} |"
        )
    lines += ["", f"## r-hop cascade (lr {CASCADE_RATE}, hops = graph diameter)", "",
              "Pearson of DICE-E and DICE-GT over every (batch, hop, node) entry, over the "
              "entries of hops >= 1, and over the batches' total r-hop influence (the sum).", "",
              "| topology | hops | Pearson, entries | Pearson, hops >= 1 | Pearson, totals |",
              "|---|---|---|---|---|"]  # fmt: skip
    for graph_name, group in cascade.groupby("topology", sort=False):
        totals = group.groupby(["step", "source"])[["estimate", "ground_truth"]].sum()
        lines.append(
            f"| {graph_name} | {group.hop.max()} | {pearson(group):.4f} | "
            f"{pearson(group[group.hop > 0]):.4f} | {pearson(totals):.4f} |"
        )
    lines += ["", "Mean |influence| on the nodes at graph distance d, at hop d (first arrival; "
              "honest sources):", "",
              "| topology | distance | entries | mean abs DICE-E | mean abs DICE-GT |",
              "|---|---|---|---|---|"]  # fmt: skip
    for row in first_arrival(cascade).itertuples():
        lines.append(
            f"| {row.topology} | {row.distance} | {row.count} | {row.estimate:.3g} | "
            f"{row.ground_truth:.3g} |"
        )
    return "\n".join(lines) + "\n"


def asymmetry_summary(asymmetry: pd.DataFrame) -> str:
    honest = asymmetry[~asymmetry.flipped].copy()
    honest[["estimate", "ground_truth"]] = honest[["estimate", "ground_truth"]].abs()
    per_node = honest.groupby("node")[["degree", "out_weight", "estimate", "ground_truth"]].mean()
    rank = per_node.corr(method="spearman")
    lines = ["", f"## Asymmetry: Barabasi-Albert graph (16 nodes, 2 edges per new node), "
             f"lr {CASCADE_RATE}", "",
             "Absolute influence of a node's batches on the *other* nodes after one hop (mean over "
             "its 5 batches; honest nodes), grouped by degree. Spearman rank correlation "
             f"with degree over the nodes: DICE-E {rank.loc['degree', 'estimate']:.2f}, "
             f"DICE-GT {rank.loc['degree', 'ground_truth']:.2f}; with the out-weight "
             f"1 - W_jj: DICE-E {rank.loc['out_weight', 'estimate']:.2f}.", "",
             "| degree | nodes | mean 1 - W_jj | mean abs DICE-E on others | "
             "mean abs DICE-GT on others |", "|---|---|---|---|---|"]  # fmt: skip
    for degree, group in per_node.groupby("degree"):
        lines.append(
            f"| {int(degree)} | {len(group)} | {group.out_weight.mean():.3f} | "
            f"{group.estimate.mean():.3g} | {group.ground_truth.mean():.3g} |"
        )
    return "\n".join(lines) + "\n"


def first_arrival(cascade: pd.DataFrame) -> pd.DataFrame:
    arrived = cascade[(cascade.hop == cascade.distance) & ~cascade.flipped].copy()
    arrived[["estimate", "ground_truth"]] = arrived[["estimate", "ground_truth"]].abs()
    grouped = arrived.groupby(["topology", "distance"], sort=False)
    table = grouped[["estimate", "ground_truth"]].mean()
    table["count"] = grouped.size()
    return table.reset_index()


def figure(cascade: pd.DataFrame, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(4.8, 3.4), dpi=120)
    for (graph_name, group), colour in zip(
        first_arrival(cascade).groupby("topology", sort=False),
        ("tab:blue", "tab:orange"),
        strict=True,
    ):
        ax.plot(group.distance, group.ground_truth, "-", color=colour, label=f"{graph_name} GT")
        ax.plot(group.distance, group.estimate, "o", color=colour, label=f"{graph_name} DICE-E")
    ax.set_yscale("log")
    ax.set_xlabel("graph distance d from the batch's node")
    ax.set_ylabel("mean |test-loss change| at hop d")
    ax.set_title("Influence cascade, 16 nodes, lr 0.1", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)


def main() -> None:
    torch.set_num_threads(1)
    OUT.mkdir(exist_ok=True)
    one_hop = one_hop_rows()
    one_hop.to_csv(OUT / "one_hop.csv", index=False, float_format="%.6g")
    cascade = cascade_rows()
    cascade.to_csv(OUT / "cascade.csv", index=False, float_format="%.6g")
    asymmetry = asymmetry_rows()
    asymmetry.to_csv(OUT / "asymmetry.csv", index=False, float_format="%.6g")
    text = summary(one_hop, cascade) + asymmetry_summary(asymmetry)
    (OUT / "summary.md").write_text(text)
    figure(cascade, OUT / "influence_vs_distance.png")
    sys.stdout.write(text)


if __name__ == "__main__":
    main()
