"""Tables, figures and findings of the semi-decentralized study (S2S vs S2A).

Reads the three sweeps that README.md's commands write under ``runs/`` and writes
``results/``: one markdown table and one PNG per figure, and ``findings.md``, which checks
each qualitative claim of Rodio et al. (AAAI 2026) against the measured numbers.

Usage: python experiments/semi_decentralized/analyze.py
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

import fedsim
from fedsim.metrics.tables import markdown_table

HERE = Path(__file__).resolve().parent
RUNS, RESULTS = HERE / "runs", HERE / "results"
REGIMES = {"iid": "R1 (IID)", "by_component": "R3 (disjoint labels per component)"}
TAIL = 0.1  # final accuracy: the mean over the evaluations of the last 10 % of rounds


def final_accuracy(sweep: str) -> pd.DataFrame:
    """Per run: its settings and the tail-averaged accuracy of the average model and devices."""
    runs = fedsim.load_runs(RUNS / sweep)
    runs = runs[runs["node"].isna() & runs["metric"].isin(["accuracy", "node_accuracy_mean"])]
    tail = runs[runs["round"] >= (1 - TAIL) * runs["rounds"]]
    keys = ["run", "strategy", "partition", "topology.kind", "strategy.sampling_rate",
            "strategy.server_period", "seed"]  # fmt: skip
    return tail.pivot_table(
        index=keys, columns="metric", values="value", aggfunc="mean"
    ).reset_index()


def by_setting(final: pd.DataFrame, axis: str, metric: str = "accuracy") -> pd.DataFrame:
    """Mean and std over seeds per (regime, topology, axis value), S2S and S2A side by side."""
    table = final.groupby(["partition", "topology.kind", axis, "strategy"])[metric].agg(
        ["mean", "std"]
    )
    table = table.unstack("strategy")
    table.columns = [f"{strategy}_{stat}" for stat, strategy in table.columns]
    table["gap_s2s_minus_s2a"] = table["s2s_mean"] - table["s2a_mean"]
    return table.reset_index()


def plot_against(table: pd.DataFrame, axis: str, label: str, path: Path) -> None:
    figure = Figure(figsize=(9, 6.5), layout="constrained")
    panels = figure.subplots(2, 2, sharex=True)
    for row, regime in enumerate(REGIMES):
        for column, kind in enumerate(("ring", "complete")):
            axes = panels[row, column]
            part = table[(table["partition"] == regime) & (table["topology.kind"] == kind)]
            for strategy, style in (("s2s", "o-"), ("s2a", "s--")):
                axes.errorbar(part[axis], part[f"{strategy}_mean"], yerr=part[f"{strategy}_std"],
                              fmt=style, capsize=3, label=strategy.upper())  # fmt: skip
            axes.set_xscale("log")
            axes.set_title(f"{REGIMES[regime]}, {kind} components", fontsize="medium")
            axes.set_ylabel("accuracy of the average model")
            axes.grid(alpha=0.3)
            axes.legend()
    for axes in panels[1]:
        axes.set_xlabel(label)
    figure.suptitle("S2S vs S2A, 100 devices in 2 components of 50 (mean and std over seeds)")
    figure.savefig(path, dpi=120)


def dynamics() -> tuple[pd.DataFrame, Path]:
    """Accuracy every round for the saw-tooth figure (R3, ring, K/n = 0.2, H = 20), also
    written to ``dynamics.csv`` (mean over seeds)."""
    runs = fedsim.load_runs(RUNS / "dynamics")
    curves = runs[runs["node"].isna() & runs["metric"].isin(["accuracy", "node_accuracy_min"])]
    curves = curves.groupby(["strategy", "metric", "round"])["value"].mean().unstack("metric")
    curves.to_csv(RESULTS / "dynamics.csv", float_format="%.4f")  # the saw-tooth's numbers
    figure = Figure(figsize=(8, 4.5), layout="constrained")
    axes = figure.subplots()
    for strategy, colour in (("s2s", "C0"), ("s2a", "C1")):
        part = curves.loc[strategy]
        axes.plot(
            part.index, part["accuracy"], color=colour, label=f"{strategy.upper()}: average model"
        )
        axes.plot(part.index, part["node_accuracy_min"], color=colour, linestyle=":",
                  label=f"{strategy.upper()}: worst device")  # fmt: skip
    period = int(runs["strategy.server_period"].iloc[0])
    for event in range(period, int(runs["round"].max()) + 1, period):
        axes.axvline(event, color="grey", alpha=0.2)
    axes.set_xlabel(f"round (grey: server steps every H = {period} rounds)")
    axes.set_ylabel("test accuracy")
    axes.set_title("R3, ring components, K/n = 0.2: accuracy every round (mean over seeds)")
    axes.legend(fontsize="small")
    path = RESULTS / "dynamics.png"
    figure.savefig(path, dpi=120)
    return curves, path


def drop_after_server_steps(
    curves: pd.DataFrame, strategy: str, period: int
) -> tuple[float, float]:
    """Mean accuracy change in rounds that end with a server step, and in the other rounds."""
    accuracy = curves.loc[strategy]["accuracy"]
    change = accuracy.diff().dropna()
    server_rounds = change.index % period == 0
    return float(change[server_rounds].mean()), float(change[~server_rounds].mean())


def findings(rates: pd.DataFrame, periods: pd.DataFrame, curves: pd.DataFrame) -> str:
    lines = ["# Findings: which of the paper's qualitative claims reproduced", ""]
    both = pd.concat([rates.assign(sweep="K/n"), periods.assign(sweep="H")])
    r1, r3 = both[both["partition"] == "iid"], both[both["partition"] == "by_component"]
    below_one = r3[~(r3["strategy.sampling_rate"] >= 1.0)]  # the H sweep (NaN here) has K/n = 0.2
    lines += [
        f"1. R1 (IID), S2A >= S2S: in {(r1['gap_s2s_minus_s2a'] <= 1e-3).mean():.0%} of "
        f"{len(r1)} settings; mean gap S2S - S2A = {r1['gap_s2s_minus_s2a'].mean() * 100:+.2f} pp.",
        f"2. R3 (disjoint labels per component), S2S > S2A: in "
        f"{(below_one['gap_s2s_minus_s2a'] > 0).mean():.0%} of {len(below_one)} settings with "
        f"K < n; largest lead {r3['gap_s2s_minus_s2a'].max() * 100:+.2f} pp, "
        f"mean {below_one['gap_s2s_minus_s2a'].mean() * 100:+.2f} pp.",
    ]
    for regime, name in REGIMES.items():
        for kind in ("ring", "complete"):
            part = rates[(rates["partition"] == regime) & (rates["topology.kind"] == kind)]
            gaps = ", ".join(
                f"{r:g}: {g * 100:+.2f}"
                for r, g in zip(
                    part["strategy.sampling_rate"], part["gap_s2s_minus_s2a"], strict=True
                )
            )
            lines.append(f"3. gap S2S - S2A (pp) by K/n, {name}, {kind}: {gaps}")
    for regime, name in REGIMES.items():
        for kind in ("ring", "complete"):
            part = periods[
                (periods["partition"] == regime) & (periods["topology.kind"] == kind)
            ].set_index("strategy.server_period")
            loss = {
                s: (part.loc[1, f"{s}_mean"] - part.loc[20, f"{s}_mean"]) * 100
                for s in ("s2s", "s2a")
            }
            lines.append(
                f"4. accuracy lost from H = 1 to H = 20, {name}, {kind}: S2S {loss['s2s']:.2f} pp, "
                f"S2A {loss['s2a']:.2f} pp "
                f"({'S2A degrades faster' if loss['s2a'] > loss['s2s'] else 'S2A not faster'})"
            )
    period = 20
    for strategy in ("s2a", "s2s"):
        at_server, otherwise = drop_after_server_steps(curves, strategy, period)
        lines.append(
            f"5. {strategy.upper()} accuracy change per round: {at_server * 100:+.2f} pp in rounds "
            "that end with a "
            f"server step, {otherwise * 100:+.2f} pp in the others."
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    RESULTS.mkdir(exist_ok=True)
    rates = by_setting(final_accuracy("sampling_rate"), "strategy.sampling_rate")
    periods = by_setting(final_accuracy("server_period"), "strategy.server_period")
    rates.to_csv(RESULTS / "sampling_rate.csv", index=False)
    periods.to_csv(RESULTS / "server_period.csv", index=False)
    (RESULTS / "sampling_rate.md").write_text(markdown_table(rates))
    (RESULTS / "server_period.md").write_text(markdown_table(periods))
    plot_against(
        rates, "strategy.sampling_rate", "sampling rate K/n (H = 5)", RESULTS / "sampling_rate.png"
    )
    plot_against(
        periods,
        "strategy.server_period",
        "server period H (K/n = 0.2)",
        RESULTS / "server_period.png",
    )
    curves, _ = dynamics()
    text = findings(rates, periods, curves)
    (RESULTS / "findings.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
