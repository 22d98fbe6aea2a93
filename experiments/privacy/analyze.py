"""Tables and figures of the privacy study: residual noise per mechanism and accuracy at equal
epsilon (CorN-DSGD, Rodio et al. 2025; spec: papers/correlated-noise.md, claims C1-C3).

Reads the sweeps that ``run.sh`` writes under ``runs/`` and writes ``results/``: CSV tables,
a markdown summary and one PNG per figure.  The solver-level table (C1) needs no training:
it solves each mechanism's covariance on fresh G(20, p) graphs here.

Usage: python experiments/privacy/analyze.py
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

import fedsim
from fedsim.metrics.tables import markdown_table
from fedsim.privacy.covariance import covariance, normalised_noise
from fedsim.topology import metropolis_hastings
from fedsim.topology.graphs import erdos_renyi

HERE = Path(__file__).resolve().parent
RUNS, RESULTS = HERE / "runs", HERE / "results"
MECHANISMS = ("central", "corn", "zero_sum", "decor", "local")
ORDER = ("non-private", *MECHANISMS)
COLOURS = dict(
    zip(
        ORDER,
        ("black", "tab:green", "tab:blue", "tab:purple", "tab:orange", "tab:red"),
        strict=True,
    )
)
SOLVER_PS = (0.2, 0.4, 0.6, 0.8, 1.0)
GRAPH_SEEDS = range(5)


def solver_table() -> pd.DataFrame:
    """rho = n b Tr(W R W^T) per mechanism on connected G(20, p), MH weights (C1)."""
    rows = []
    for p in SOLVER_PS:
        for seed in GRAPH_SEEDS:
            weights = metropolis_hastings(erdos_renyi(20, seed, p, connected=True)).toarray()
            for mechanism in MECHANISMS:
                found = covariance(mechanism, weights, bound=1.0)
                rows.append((p, seed, mechanism, normalised_noise(weights, found.matrix(), 1.0)))
    table = pd.DataFrame(rows, columns=["p", "graph_seed", "mechanism", "rho"])
    return table.groupby(["p", "mechanism"]).rho.agg(["mean", "std"]).unstack("mechanism")


def final_runs() -> pd.DataFrame:
    """One row per run: mechanism, p, epsilon, seed, final accuracy and privacy record."""
    rows = []
    for summary_path in sorted(RUNS.glob("*/*/summary.json")):
        summary = json.loads(summary_path.read_text())
        config, privacy = summary["config"], summary.get("privacy")
        rows.append(
            {
                "mechanism": privacy["mechanism"] if privacy else "non-private",
                "p": config["topology"]["p"],
                "epsilon": privacy["epsilon"] if privacy else np.inf,
                "seed": config["seed"],
                "accuracy": summary["final"]["accuracy"],
                "node_accuracy": summary["final"]["node_accuracy_mean"],
                "rho": privacy["noise_normalised"] if privacy else 0.0,
                "noise_trace": privacy["noise_trace"] if privacy else 0.0,
                "epsilon_spent": privacy["epsilon_spent"] if privacy else np.inf,
                "epsilon_dp_accounting": privacy["epsilon_spent_dp_accounting"]
                if privacy
                else np.inf,
                "epsilon_one_curious_node": (
                    privacy["epsilon_against_one_curious_node"] if privacy else np.inf
                ),
                "wall_time_s": summary["wall_time_s"],
            }
        )
    return pd.DataFrame(rows)


def accuracy_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation over seeds of the final accuracy of the nodes' average."""
    private = runs[runs.mechanism != "non-private"]
    table = private.groupby(["p", "epsilon", "mechanism"]).accuracy.agg(["mean", "std"])
    table = table.unstack("mechanism").reorder_levels([1, 0], axis=1)
    table = table[[(m, s) for m in MECHANISMS for s in ("mean", "std")]]
    baseline = runs[runs.mechanism == "non-private"].groupby("p").accuracy.agg(["mean", "std"])
    for stat in ("mean", "std"):
        table[("non-private", stat)] = table.index.get_level_values("p").map(baseline[stat])
    return table


def orderings(table: pd.DataFrame) -> pd.DataFrame:
    """Which of the paper's orderings hold, cell by cell, on the seed means."""
    mean = {m: table[(m, "mean")] for m in ORDER}
    checks = {
        "central >= corn": mean["central"] >= mean["corn"],
        "corn >= decor": mean["corn"] >= mean["decor"],
        "decor >= local": mean["decor"] >= mean["local"],
        "non-private >= all": mean["non-private"] >= table.xs("mean", axis=1, level=1).max(axis=1),
    }
    return pd.DataFrame(checks)


def accuracy_figure(runs: pd.DataFrame) -> Figure:
    figure = Figure(figsize=(12, 3.8), layout="constrained")
    axes = figure.subplots(1, 3, sharey=True)
    private = runs[runs.mechanism != "non-private"]
    for ax, (p, part) in zip(axes, private.groupby("p"), strict=True):
        for mechanism in MECHANISMS:
            curve = part[part.mechanism == mechanism].groupby("epsilon").accuracy
            ax.errorbar(
                curve.mean().index, curve.mean(), yerr=curve.std(), marker="o", capsize=3,
                label=mechanism, color=COLOURS[mechanism],
            )  # fmt: skip
        clear = runs[(runs.mechanism == "non-private") & (runs.p == p)].accuracy.mean()
        ax.axhline(clear, color="black", linestyle="--", label="non-private D-SGD")
        ax.set_xscale("log")
        ax.set_xticks([3, 10, 20, 40], labels=["3", "10", "20", "40"])
        ax.minorticks_off()
        ax.set_title(f"G(20, p = {p})")
        ax.set_xlabel("epsilon (delta = 1e-5)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test accuracy of the nodes' average")
    axes[-1].legend(loc="lower right", fontsize=8)
    figure.suptitle(
        "Logistic regression on digits, 20 nodes, T = 500 noisy steps (mean, std of 3 seeds)"
    )
    return figure


def rho_figure(solver: pd.DataFrame) -> Figure:
    figure = Figure(figsize=(6, 4), layout="constrained")
    ax = figure.subplots()
    for mechanism in MECHANISMS:
        ax.errorbar(
            solver.index, solver[("mean", mechanism)], yerr=solver[("std", mechanism)],
            marker="o", capsize=3, label=mechanism, color=COLOURS[mechanism],
        )  # fmt: skip
    ax.set_yscale("log")
    ax.set_xlabel("edge probability p of G(20, p)")
    ax.set_ylabel("residual noise n b Tr(W R W^T)  (central DP = 1)")
    ax.set_title("Noise left after one mixing step (5 graphs per p)")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    return figure


def curves_figure() -> Figure:
    """Accuracy over rounds at p = 0.5, epsilon = 10, seed 0."""
    runs = fedsim.load_runs(RUNS / "private")
    runs = runs[
        (runs["topology.p"] == 0.5) & (runs["privacy.epsilon"] == 10) & (runs.seed == 0)
        & (runs.metric == "accuracy")
    ]  # fmt: skip
    figure = Figure(figsize=(6, 4), layout="constrained")
    ax = figure.subplots()
    for mechanism, part in runs.groupby("privacy.mechanism"):
        ax.plot(part["round"], part["value"], marker=".", label=mechanism, color=COLOURS[mechanism])
    ax.set_xlabel("round (one noisy local step each)")
    ax.set_ylabel("test accuracy of the nodes' average")
    ax.set_title("G(20, 0.5), epsilon = 10, seed 0")
    ax.grid(alpha=0.3)
    ax.legend()
    return figure


def _labelled(table: pd.DataFrame) -> pd.DataFrame:
    """The (p, epsilon) index as short labels for the markdown tables."""
    labels = [(f"{p:g}", f"{eps:g}") for p, eps in table.index]
    return table.set_axis(pd.MultiIndex.from_tuples(labels, names=table.index.names))


def main() -> None:
    RESULTS.mkdir(exist_ok=True)
    solver = solver_table()
    solver.to_csv(RESULTS / "residual_noise_by_p.csv", float_format="%.4f")
    runs = final_runs()
    runs.to_csv(RESULTS / "runs.csv", index=False, float_format="%.5g")
    table = accuracy_table(runs)
    table.to_csv(RESULTS / "accuracy.csv", float_format="%.4f")
    checks = orderings(table)
    checks.to_csv(RESULTS / "orderings.csv")
    rho_runs = runs[runs.mechanism != "non-private"].groupby(["p", "seed", "mechanism"]).rho
    invariant = float((rho_runs.max() / rho_runs.min()).max())
    accuracy_figure(runs).savefig(RESULTS / "accuracy_vs_epsilon.png", dpi=120)
    rho_figure(solver).savefig(RESULTS / "residual_noise_vs_p.png", dpi=120)
    curves_figure().savefig(RESULTS / "accuracy_vs_round.png", dpi=120)
    means = _labelled(table.xs("mean", axis=1, level=1)[list(ORDER)])
    checks = _labelled(checks)
    lines = [
        "# Privacy study: results",
        "",
        "Generated by `analyze.py` from the sweeps of `run.sh`.",
        "",
        "## Residual noise n b Tr(W R W^T) (1 = central DP), mean over 5 graphs G(20, p)",
        "",
        markdown_table(
            solver.xs("mean", axis=1, level=0)[list(MECHANISMS)].rename(index="{:g}".format),
            3,
            index=True,
        ),
        "",
        f"Across epsilon on the same graph, rho varies by a factor of at most {invariant:.9f}.",
        "",
        "## Final test accuracy (mean over 3 seeds), logistic regression on digits",
        "",
        markdown_table(means, 3, index=True),
        "",
        "## Orderings (on the seed means)",
        "",
        markdown_table(checks, index=True),
        "",
        f"All hold in {int(checks.all(axis=1).sum())} of {len(checks)} (p, epsilon) cells.",
    ]
    (RESULTS / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
