"""Tables and figures of the decentralized-zoo study (../shared/papers/decentralized-zoo.md).

Reads the sweeps that ``run.sh`` writes under ``runs/`` and writes ``results/``:

- (a) bias under heterogeneous data: ``bias.csv`` (one row per run), ``bias.md`` (mean and
  standard deviation over seeds of the final accuracy of the averaged model and of the
  nodes' own models, the consensus distance and the bytes), ``bias_accuracy.png`` and
  ``bias_consensus.png`` (per round, mean of the seeds);
- (b) Epidemic Learning against D-PSGD on a fixed s-regular graph: ``epidemic.csv``,
  ``epidemic.md`` (final accuracy, rounds and bytes to targets), ``epidemic.png`` (accuracy
  against rounds and against bytes, consensus distance against rounds);
- (b') averaging only: ``averaging.csv`` and ``averaging.md`` (the consensus distance's
  ratio over each round, EL against a fixed 7-regular graph, 96 nodes);
- (c) single merge: ``merge.csv``, ``merge.md`` (the nodes' mean and the averaged model's
  accuracy just before and after the merge and at the end), ``merge.png``.

Usage: python experiments/decentralized/analyze.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

import fedsim

HERE = Path(__file__).resolve().parent
RUNS, RESULTS = HERE / "runs", HERE / "results"

BIAS = {
    "dpsgd_atc": "D-PSGD, adapt-then-combine",
    "dpsgd_cta": "D-PSGD, combine-then-adapt",
    "gradient_tracking": "gradient tracking (DSGT)",
    "exact_diffusion": "Exact Diffusion",
    "d2": "D²",
}
EPIDEMIC = {
    "el_dpsgd_regular": "D-PSGD, fixed s-regular graph",
    "el_oracle": "EL-Oracle",
    "el_local": "EL-Local",
}
MERGE = {"merge": "single merge"}
AVERAGING = {
    "avg_dpsgd_regular": "D-PSGD, fixed 7-regular graph",
    "avg_el_oracle": "EL-Oracle",
    "avg_el_local": "EL-Local",
}
EPIDEMIC_TARGETS = (0.80, 0.85, 0.90)
PARAMS = ("topology", "seed", "strategy.variant", "strategy.merge_round")


def load(key: str) -> pd.DataFrame:
    """Per run and evaluation of the sweep ``runs/<key>``: the metrics, wide (node-level
    rows dropped)."""
    rows = fedsim.load_runs(RUNS / key)
    rows = rows[rows["node"].isna()]
    index = ["run", "round", *[p for p in PARAMS if p in rows.columns]]
    wide = rows.pivot_table(index=index, columns="metric", values="value").reset_index()
    return wide.assign(key=key)


def load_all(keys: dict[str, str]) -> pd.DataFrame:
    frames = [load(key) for key in keys if (RUNS / key).exists()]
    return pd.concat(frames, ignore_index=True)


def finals(curves: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """The last evaluation of every run."""
    last = curves.sort_values("round").groupby([*by, "run"], as_index=False).tail(1)
    out = last.assign(
        mb_total=last["bytes_sent_total"] / 1e6,
        mb_per_round=last["bytes_sent_total"] / 1e6 / last["round"],
    )
    return out.sort_values(by).reset_index(drop=True)


def mean_std(values: pd.Series, scale: float = 1.0, digits: int = 1) -> str:
    values = values.dropna() * scale
    if values.empty:
        return "–"
    if len(values) == 1:
        return f"{values.iloc[0]:.{digits}f}"
    return f"{values.mean():.{digits}f} ± {values.std(ddof=1):.{digits}f}"


def bias_table(final: pd.DataFrame) -> str:
    lines = [
        "| topology | strategy | seeds | averaged model acc. (%) | nodes' own acc., mean (%) "
        "| worst node (%) | consensus distance | MB sent per round "
        "| nodes' own acc. at half the rounds (%) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for (topology, key), group in final.groupby(["topology", "key"], sort=True, observed=True):
        lines.append(
            f"| {topology} | {BIAS[key]} | {len(group)} "
            f"| {mean_std(group['global_accuracy'], 100)} "
            f"| {mean_std(group['node_accuracy_mean'], 100)} "
            f"| {mean_std(group['node_accuracy_min'], 100)} "
            f"| {mean_std(group['consensus_distance'], 1, 4)} "
            f"| {group['mb_per_round'].mean():.3f} | {mean_std(group['half_nodes'], 100)} |"
        )
    return "\n".join(lines) + "\n"


def plot_bias(curves: pd.DataFrame, path: Path, metric: str, label: str, log: bool) -> None:
    topologies = [t for t in ("ring", "regular") if (curves["topology"] == t).any()]
    figure = Figure(figsize=(5.0 * len(topologies), 4.0), layout="constrained")
    axes_list = np.atleast_1d(figure.subplots(1, len(topologies), sharey=True))
    for axes, topology in zip(axes_list, topologies, strict=True):
        for index, key in enumerate(BIAS):
            runs = curves[(curves["topology"] == topology) & (curves["key"] == key)]
            if runs.empty:
                continue
            mean = runs.groupby("round")[[metric, "global_accuracy"]].mean()
            if log:
                mean = mean[mean.index > 0]  # round 0: identical models, distance 0
            color = f"C{index}"
            axes.plot(mean.index, mean[metric], color=color, label=BIAS[key])
            if metric == "node_accuracy_mean":
                axes.plot(mean.index, mean["global_accuracy"], color=color, linestyle=":")
        axes.set_title(f"{topology}, 25 nodes, Dirichlet 0.1, lr 0.1")
        axes.set_xlabel("round (one local SGD step each)")
        if log:
            axes.set_yscale("log")
        axes.grid(alpha=0.3)
    axes_list[0].set_ylabel(label)
    if not log:
        axes_list[0].set_ylim(0.5, 1.0)
    axes_list[0].legend(fontsize=8)
    figure.savefig(path, dpi=120)


def first_round(run: pd.DataFrame, target: float, column: str) -> tuple[float, float]:
    """Round and MB sent at the first evaluation whose ``column`` reaches ``target``."""
    reached = run[run[column] >= target]
    if reached.empty:
        return np.nan, np.nan
    first = reached.iloc[0]
    return float(first["round"]), float(first["bytes_sent_total"] / 1e6)


def epidemic_rows(curves: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for (key, seed), run in curves.groupby(["key", "seed"]):
        run = run.sort_values("round")
        last = run.iloc[-1]
        row = {
            "strategy": key,
            "seed": int(seed),
            "rounds": int(last["round"]),
            "node_accuracy_mean": last["node_accuracy_mean"],
            "global_accuracy": last["global_accuracy"],
            "consensus_distance": last["consensus_distance"],
            "mb_per_round": last["bytes_sent_total"] / 1e6 / last["round"],
        }
        for target in EPIDEMIC_TARGETS:
            rounds, mb = first_round(run, target, "node_accuracy_mean")
            row[f"rounds_to_{target:.2f}"], row[f"mb_to_{target:.2f}"] = rounds, mb
        rows.append(row)
    return pd.DataFrame(rows)


def epidemic_table(rows: pd.DataFrame) -> str:
    targets = " | ".join(f"rounds to {t:.0%} (reached)" for t in EPIDEMIC_TARGETS)
    lines = [
        f"| strategy | seeds | nodes' own acc., final (%) | averaged model (%) "
        f"| consensus distance | MB per round | {targets} |",
        "|---|---|---|---|---|---|" + "---|" * len(EPIDEMIC_TARGETS),
    ]
    for key in EPIDEMIC:
        group = rows[rows["strategy"] == key]
        if group.empty:
            continue
        cells = []
        for target in EPIDEMIC_TARGETS:
            column = group[f"rounds_to_{target:.2f}"]
            cells.append(f"{mean_std(column, 1, 0)} ({column.notna().sum()}/{len(group)})")
        lines.append(
            f"| {EPIDEMIC[key]} | {len(group)} | {mean_std(group['node_accuracy_mean'], 100)} "
            f"| {mean_std(group['global_accuracy'], 100)} "
            f"| {mean_std(group['consensus_distance'], 1, 4)} "
            f"| {group['mb_per_round'].mean():.3f} | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines) + "\n"


def plot_epidemic(curves: pd.DataFrame, path: Path) -> None:
    figure = Figure(figsize=(15, 4.0), layout="constrained")
    by_round, by_bytes, consensus = figure.subplots(1, 3)
    for index, key in enumerate(EPIDEMIC):
        runs = curves[curves["key"] == key]
        if runs.empty:
            continue
        mean = runs.groupby("round")[
            ["node_accuracy_mean", "bytes_sent_total", "consensus_distance"]
        ].mean()
        style = {"color": f"C{index}", "label": EPIDEMIC[key]}
        by_round.plot(mean.index, mean["node_accuracy_mean"], **style)
        by_bytes.plot(mean["bytes_sent_total"] / 1e6, mean["node_accuracy_mean"], **style)
        consensus.plot(mean.index[1:], mean["consensus_distance"].iloc[1:], **style)
    by_round.set_xlabel("round")
    by_bytes.set_xlabel("MB sent (all nodes)")
    consensus.set_xlabel("round")
    for axes in (by_round, by_bytes):
        axes.set_ylabel("nodes' own accuracy, mean")
        axes.set_ylim(0.5, 1.0)
    consensus.set_ylabel("consensus distance")
    consensus.set_yscale("log")
    for axes in (by_round, by_bytes, consensus):
        axes.grid(alpha=0.3)
    by_round.legend(fontsize=8)
    figure.savefig(path, dpi=120)


def merge_rows(curves: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for (merge_round, seed), run in curves.groupby(["strategy.merge_round", "seed"]):
        run = run.sort_values("round").set_index("round")
        merge_round = int(merge_round)
        # round index k is recorded as round k + 1 (after it)
        before = run[run.index <= merge_round]  # the last evaluation before the merge
        after = run.loc[merge_round + 1] if merge_round + 1 in run.index else None
        last = run.iloc[-1]
        rows.append(
            {
                "merge_round": merge_round,
                "seed": int(seed),
                "before_nodes": before["node_accuracy_mean"].iloc[-1] if len(before) else np.nan,
                "before_averaged": before["global_accuracy"].iloc[-1] if len(before) else np.nan,
                "after_nodes": after["node_accuracy_mean"] if after is not None else np.nan,
                "final_nodes": last["node_accuracy_mean"],
                "final_averaged": last["global_accuracy"],
                "final_consensus": last["consensus_distance"],
                "mb_total": last["bytes_sent_total"] / 1e6,
            }
        )
    return pd.DataFrame(rows)


def merge_table(rows: pd.DataFrame, rounds: int) -> str:
    lines = [
        "| merge after round | seeds | nodes' own acc. before (%) | averaged model before (%) "
        "| nodes' own acc. right after (%) | nodes' own acc., final (%) "
        "| averaged model, final (%) | MB sent in all |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for merge_round, group in rows.groupby("merge_round"):
        name = str(merge_round + 1) if merge_round < rounds else "never"
        lines.append(
            f"| {name} | {len(group)} | {mean_std(group['before_nodes'], 100)} "
            f"| {mean_std(group['before_averaged'], 100)} | {mean_std(group['after_nodes'], 100)} "
            f"| {mean_std(group['final_nodes'], 100)} | {mean_std(group['final_averaged'], 100)} "
            f"| {group['mb_total'].mean():.1f} |"
        )
    return "\n".join(lines) + "\n"


def plot_merge(curves: pd.DataFrame, path: Path, rounds: int) -> None:
    figure = Figure(figsize=(6.0, 4.0), layout="constrained")
    axes = figure.subplots()
    for index, (merge_round, runs) in enumerate(curves.groupby("strategy.merge_round")):
        merge_round = int(merge_round)
        name = f"merge after round {merge_round + 1}" if merge_round < rounds else "no merge"
        mean = runs.groupby("round")[["node_accuracy_mean", "global_accuracy"]].mean()
        axes.plot(mean.index, mean["node_accuracy_mean"], color=f"C{index}", label=name)
        axes.plot(mean.index, mean["global_accuracy"], color=f"C{index}", linestyle=":")
    axes.set_xlabel("round")
    axes.set_ylabel("accuracy")
    axes.set_title(
        "25 nodes, r = 0.2; solid: nodes' own (mean), dotted: averaged model", fontsize=9
    )
    axes.set_ylim(0.0, 1.0)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.savefig(path, dpi=120)


def averaging_rows() -> pd.DataFrame:
    """Per run of the averaging-only sweeps: the consensus distance's ratio over each round."""
    curves = load_all({"avg_dpsgd_regular": "", "avg_el": ""})
    variant = "avg_el_" + curves["strategy.variant"].astype(str)
    curves["key"] = np.where(curves["key"] == "avg_el", variant, curves["key"])
    rows = []
    for (key, seed), run in curves.groupby(["key", "seed"]):
        distance = run.sort_values("round")["consensus_distance"].to_numpy()
        ratios = distance[1:] / distance[:-1]
        row = {"strategy": key, "seed": int(seed)}
        row.update({f"round_{index + 1}": ratio for index, ratio in enumerate(ratios)})
        rows.append(row)
    return pd.DataFrame(rows)


def averaging_table(rows: pd.DataFrame) -> str:
    columns = [c for c in rows.columns if c.startswith("round_")]
    shown = [columns[0], columns[1], columns[4], columns[-1]]
    header = " | ".join(f"round {c.removeprefix('round_')}" for c in shown)
    lines = [
        f"| strategy | seeds | {header} | geometric mean, rounds 1-{len(columns)} |",
        "|---|---|" + "---|" * (len(shown) + 1),
    ]
    for key, name in AVERAGING.items():
        group = rows[rows["strategy"] == key]
        if group.empty:
            continue
        geometric = np.exp(np.log(group[columns]).mean(axis=1))
        cells = " | ".join(mean_std(group[c], 1, 3) for c in shown)
        lines.append(f"| {name} | {len(group)} | {cells} | {mean_std(geometric, 1, 3)} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    RESULTS.mkdir(exist_ok=True)
    columns = [
        "key",
        "topology",
        "seed",
        "round",
        "global_accuracy",
        "node_accuracy_mean",
        "node_accuracy_min",
        "consensus_distance",
        "mb_total",
        "mb_per_round",
        "half_nodes",
    ]
    if any((RUNS / key).exists() for key in BIAS):
        curves = load_all(BIAS)
        curves["key"] = pd.Categorical(curves["key"], categories=list(BIAS))
        curves["topology"] = pd.Categorical(curves["topology"], categories=["ring", "regular"])
        final = finals(curves, ["topology", "key"])
        half = curves[curves["round"] == curves["round"].max() // 2]
        final = final.merge(
            half[["run", "key", "node_accuracy_mean"]].rename(
                columns={"node_accuracy_mean": "half_nodes"}
            ),
            on=["run", "key"],
            how="left",
        )
        final[columns].to_csv(RESULTS / "bias.csv", index=False, float_format="%.6g")
        (RESULTS / "bias.md").write_text(bias_table(final))
        plot_bias(
            curves,
            RESULTS / "bias_accuracy.png",
            "node_accuracy_mean",
            "accuracy (solid: nodes' own, mean; dotted: averaged)",
            log=False,
        )
        plot_bias(
            curves,
            RESULTS / "bias_consensus.png",
            "consensus_distance",
            "consensus distance",
            log=True,
        )
        print(bias_table(final))
    if any((RUNS / key).exists() for key in EPIDEMIC):
        curves = load_all(EPIDEMIC)
        rows = epidemic_rows(curves)
        rows.to_csv(RESULTS / "epidemic.csv", index=False, float_format="%.6g")
        (RESULTS / "epidemic.md").write_text(epidemic_table(rows))
        plot_epidemic(curves, RESULTS / "epidemic.png")
        print(epidemic_table(rows))
    if (RUNS / "avg_el").exists() and (RUNS / "avg_dpsgd_regular").exists():
        rows = averaging_rows()
        rows.to_csv(RESULTS / "averaging.csv", index=False, float_format="%.6g")
        (RESULTS / "averaging.md").write_text(averaging_table(rows))
        print(averaging_table(rows))
    if (RUNS / "merge").exists():
        curves = load_all(MERGE)
        rounds = int(curves["round"].max())
        rows = merge_rows(curves)
        rows.to_csv(RESULTS / "merge.csv", index=False, float_format="%.6g")
        (RESULTS / "merge.md").write_text(merge_table(rows, rounds))
        plot_merge(curves, RESULTS / "merge.png", rounds)
        print(merge_table(rows, rounds))


if __name__ == "__main__":
    main()
