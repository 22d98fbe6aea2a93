"""Tables and figures of the Byzantine-robustness study (issue 19) from the runs of sweep.py.

Reads every ``runs/<part>/.../run.json`` (what was run, or why fedsim refused it) and the
run's ``summary.json`` (its final, honest-only metrics) and writes ``results/``:

- ``byzantine.csv``: one row per run (n/a rows: the config error fedsim raised);
- ``table.md``: mean ± std over seeds per (setting, aggregator, attack, fraction);
- ``heatmap_fl.png``, ``heatmap_gossip.png``: aggregator x attack per fraction, mean over seeds
  of the honest accuracy (FL: the server's model; gossip: the mean over honest nodes of their
  own models' accuracy);
- ``orderings.md``: the ALIE-vs-sign-flip ordering per seed (reproduction target 2);
- ``label_flip.md``: label flip against the attack-free run with the same f per aggregator and
  fraction (byzantine.md §5 item 5, the negative control), when that part has run;
- ``dissensus.csv`` / ``dissensus.png``: consensus distance and accuracy over rounds under the
  dissensus attack, when that part has run.

Metrics (fedsim leaves the attackers out of all of them): ``accuracy`` the global model (FL) or
the average of the honest nodes' models (gossip); ``node_accuracy_mean`` / ``_min`` the honest
nodes' own models (in FL: the clients' models after local training); ``consensus_distance``
the mean squared distance of the honest models to their average (gossip).

Usage: python experiments/byzantine/analyze.py
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

HERE = Path(__file__).resolve().parent
RUNS, RESULTS = HERE / "runs", HERE / "results"
AGGREGATORS = [
    "mean",
    "median",
    "trimmed_mean",
    "krum",
    "multi_krum",
    "geometric_median",
    "centered_clipping",
    "bulyan",
    "clipped_gossip",
]
ATTACKS = ["none", "sign_flip", "gaussian", "alie", "alie_paper", "alie_z1", "ipm", "label_flip"]
ALIE_FORMS = {"alie": "code", "alie_paper": "paper", "alie_z1": "z=1"}
MAIN_PARTS = ("fl", "gossip", "alie_paper", "alie_z1", "label_flip")
FINAL = ["accuracy", "node_accuracy_mean", "node_accuracy_min", "consensus_distance", "loss"]
# The honest accuracy each setting's heat map shows.
HEADLINE = {"fl": "accuracy", "gossip": "node_accuracy_mean"}


def collect() -> pd.DataFrame:
    rows = []
    for path in sorted(RUNS.glob("*/**/run.json")):
        record = json.loads(path.read_text())
        part = path.relative_to(RUNS).parts[0]
        row = {"part": part, **{k: v for k, v in record.items() if k != "overrides"}}
        row["overrides"] = " ".join(record["overrides"])
        summary_path = path.parent / "summary.json"
        if record["status"] != "n/a" and summary_path.exists():
            summary = json.loads(summary_path.read_text())
            final = summary.get("final", {})
            row.update({name: final.get(name, np.nan) for name in FINAL})
            row["wall_time_s"] = summary.get("wall_time_s", np.nan)
            row["diverged"] = summary.get("diverged")
        rows.append(row)
    frame = pd.DataFrame(rows)
    if "config_error" not in frame:
        frame["config_error"] = None
    if frame.get("setting") is not None:
        frame.loc[frame["setting"] == "fl", "consensus_distance"] = np.nan  # clients, not peers
    columns = [
        "part",
        "setting",
        "aggregator",
        "attack",
        "fraction",
        "seed",
        "attackers",
        "f",
        "received",
        "status",
        *FINAL,
        "wall_time_s",
        "config_error",
        "overrides",
    ]
    frame = frame.reindex(columns=columns)
    order = {name: i for i, name in enumerate(AGGREGATORS)}
    return frame.sort_values(
        ["part", "setting", "aggregator", "attack", "fraction", "seed"],
        key=lambda c: c.map(order) if c.name == "aggregator" else c,
    ).reset_index(drop=True)


def cell(values: pd.Series, digits: int = 3, compact: bool = False) -> str:
    values = values.dropna()
    if values.empty:
        return "n/a"
    if compact:  # the mean over seeds; * where some seeds were n/a
        return f"{values.mean():.{digits}f}" + ("" if len(values) == 3 else f"* ({len(values)})")
    if len(values) == 1:
        return f"{values.iloc[0]:.{digits}f} (1 seed)"
    text = f"{values.mean():.{digits}f} ± {values.std(ddof=1):.{digits}f}"
    return text if len(values) == 3 else f"{text} ({len(values)} seeds)"


def table(frame: pd.DataFrame, compact: bool = False) -> str:
    lines = []
    digits = 2 if compact else 3
    for (part, setting), group in frame.groupby(["part", "setting"], sort=False):
        metric = HEADLINE[setting]
        what = "mean over seeds" if compact else "mean ± std over seeds"
        lines += [f"### part {part}, setting {setting}: {metric} ({what})", ""]
        fractions = sorted(group["fraction"].unique())
        attacks = [
            a
            for a in ATTACKS + sorted(set(group["attack"]) - set(ATTACKS))
            if a in set(group["attack"])
        ]
        baseline = bool((group["fraction"] == 0).any())
        header = (
            ["aggregator"]
            + (["f=0, none"] if baseline else [])
            + [
                f"{fraction}: {attack}"
                for fraction in fractions
                if fraction > 0
                for attack in attacks
            ]
        )
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for aggregator in [a for a in AGGREGATORS if a in set(group["aggregator"])]:
            mine = group[group["aggregator"] == aggregator]
            cells = [aggregator]
            if baseline:
                cells.append(cell(mine[(mine["fraction"] == 0)][metric], digits, compact))
            for fraction in fractions:
                if fraction == 0:
                    continue
                for attack in attacks:
                    chosen = mine[(mine["fraction"] == fraction) & (mine["attack"] == attack)]
                    if attack == "none" and chosen.empty:  # does not depend on f
                        chosen = mine[(mine["fraction"] == 0) & (mine["attack"] == "none")]
                    cells.append(cell(chosen[metric], digits, compact))
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def heatmap(frame: pd.DataFrame, setting: str, parts: tuple[str, ...]) -> Figure | None:
    data = frame[(frame["setting"] == setting) & frame["part"].isin(parts)]
    if data.empty:
        return None
    metric = HEADLINE[setting]
    fractions = [f for f in sorted(data["fraction"].unique()) if f > 0]
    attacks = [a for a in ATTACKS if a in set(data["attack"])]
    aggregators = [a for a in AGGREGATORS if a in set(data["aggregator"])]
    figure = Figure(figsize=(3.2 + 2.6 * len(fractions) * len(attacks) / 5, 4.2))
    axes = figure.subplots(
        1, len(fractions) + 1, sharey=True, width_ratios=[1] + [len(attacks)] * len(fractions)
    )
    panels = [(0.0, ["none"])] + [(fraction, attacks) for fraction in fractions]
    image = None
    for axis, (fraction, columns) in zip(axes, panels, strict=True):
        values = np.full((len(aggregators), len(columns)), np.nan)
        notes = np.full(values.shape, "", dtype=object)
        for i, aggregator in enumerate(aggregators):
            for j, attack in enumerate(columns):
                chosen = data[
                    (data["aggregator"] == aggregator)
                    & (data["attack"] == attack)
                    & (data["fraction"] == fraction)
                ]
                if attack == "none" and chosen.empty:
                    chosen = data[
                        (data["aggregator"] == aggregator)
                        & (data["attack"] == "none")
                        & (data["fraction"] == 0)
                    ]
                got = chosen[metric].dropna()
                if got.empty:
                    notes[i, j] = "n/a"
                    continue
                values[i, j] = got.mean()
                notes[i, j] = f"{got.mean():.2f}" + ("" if len(got) == len(chosen) else "*")
        image = axis.imshow(values, vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto")
        for (i, j), note in np.ndenumerate(notes):
            colour = "black" if note != "n/a" and values[i, j] > 0.6 else "white"
            axis.text(j, i, note, ha="center", va="center", fontsize=7, color=colour)
        axis.set_facecolor("0.6")
        axis.set_xticks(range(len(columns)), columns, rotation=60, ha="right", fontsize=8)
        axis.set_title(
            "no attack, f = 0" if fraction == 0 else f"attackers {fraction:.0%}", fontsize=9
        )
        axis.set_yticks(range(len(aggregators)), aggregators, fontsize=8)
    figure.colorbar(image, ax=list(axes), shrink=0.8, label=metric)
    what = "server model" if setting == "fl" else "honest nodes' own models, mean"
    figure.suptitle(
        f"{setting}: honest accuracy ({what}) at the last round, mean over seeds "
        "(* some seeds n/a; 'none' in a fraction panel: no attacker, aggregator set for its f)",
        fontsize=9,
    )
    return figure


def orderings(frame: pd.DataFrame) -> str:
    """Target 2: per setting, fraction and aggregator, ALIE's accuracy against sign flip's."""
    lines = [
        "| setting | ALIE form | fraction | aggregator | sign flip | ALIE "
        "| seeds with ALIE < sign flip |",
        "|---|---|---|---|---|---|---|",
    ]
    for parts, settings in ((MAIN_PARTS, ("fl", "gossip")), (("alie_sgd",), ("fl",))):
        lines += ordering_rows(frame[frame["part"].isin(parts)], settings, parts)
    return "\n".join(lines) + "\n"


def ordering_rows(main: pd.DataFrame, settings: tuple[str, ...], parts: tuple[str, ...]):
    lines = []
    for setting in settings:
        metric = HEADLINE[setting]
        data = main[main["setting"] == setting]
        for alie in ALIE_FORMS:
            for fraction in sorted(f for f in data["fraction"].unique() if f > 0):
                for aggregator in AGGREGATORS:
                    pick = data[(data["aggregator"] == aggregator) & (data["fraction"] == fraction)]
                    flip = pick[pick["attack"] == "sign_flip"].set_index("seed")[metric]
                    small = pick[pick["attack"] == alie].set_index("seed")[metric]
                    both = pd.concat([flip, small], axis=1, keys=["flip", "alie"]).dropna()
                    if both.empty:
                        continue
                    wins = int((both["alie"] < both["flip"]).sum())
                    label = f"{setting} (1 SGD step/round)" if parts == ("alie_sgd",) else setting
                    lines.append(
                        f"| {label} | {ALIE_FORMS[alie]} | "
                        f"{fraction} | {aggregator} | {both['flip'].mean():.3f} | "
                        f"{both['alie'].mean():.3f} | {wins}/{len(both)} |"
                    )
    return lines


def label_flip_table(frame: pd.DataFrame) -> str | None:
    """Item 5: per setting, aggregator and fraction, the honest accuracy under label flip against
    the attack-free run with the aggregator set for that fraction's f (mean over seeds; the
    aggregators without f: their one attack-free run), the difference over the seeds both have,
    and the worst seed's difference."""
    flips = frame[(frame["part"] == "label_flip") & (frame["attack"] == "label_flip")]
    if flips.empty:
        return None
    lines = []
    for setting in ("fl", "gossip"):
        metric = HEADLINE[setting]
        data = flips[flips["setting"] == setting]
        free = frame[(frame["part"] == setting) & (frame["attack"] == "none")]
        if data.empty:
            continue
        fractions = sorted(data["fraction"].unique())
        lines += [
            f"### {setting}: {metric} at the last round, label flip against no attack "
            "(mean over seeds; Δ = label flip − no attack over the seeds both have, "
            "worst seed in brackets)",
            "",
            "| aggregator | "
            + " | ".join(f"{fr:.0%}: none | {fr:.0%}: label_flip | {fr:.0%}: Δ" for fr in fractions)
            + " |",
            "|---|" + "---|---|---|" * len(fractions),
        ]
        for aggregator in [a for a in AGGREGATORS if a in set(data["aggregator"])]:
            cells = [aggregator]
            for fraction in fractions:
                mine = free[free["aggregator"] == aggregator]
                base = mine[mine["fraction"] == fraction]
                if base.empty:  # does not depend on f: its one attack-free run per seed
                    base = mine[mine["fraction"] == 0]
                base = base.set_index("seed")[metric]
                pick = data[(data["aggregator"] == aggregator) & (data["fraction"] == fraction)]
                flip = pick.set_index("seed")[metric]
                both = pd.concat([base, flip], axis=1, keys=["none", "flip"]).dropna()
                if both.empty:
                    cells += ["n/a"] * 3
                    continue
                delta = both["flip"] - both["none"]
                star = "" if len(both) == 3 else f"* ({len(both)})"
                cells += [
                    f"{both['none'].mean():.3f}{star}",
                    f"{both['flip'].mean():.3f}{star}",
                    f"{delta.mean():+.3f} ({delta.min():+.3f})",
                ]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def dissensus_curves() -> pd.DataFrame | None:
    folder = RUNS / "dissensus"
    if not folder.exists():
        return None
    curves = []
    for path in sorted(folder.glob("**/run.json")):
        record = json.loads(path.read_text())
        if record["status"] == "n/a" or not (path.parent / "metrics.parquet").exists():
            continue
        metrics = pd.read_parquet(path.parent / "metrics.parquet")
        metrics = metrics[metrics["node"].isna()]
        wide = metrics.pivot_table(index="round", columns="metric", values="value")
        keep = [
            c
            for c in ["accuracy", "node_accuracy_mean", "node_accuracy_min", "consensus_distance"]
            if c in wide
        ]
        curve = wide[keep].reset_index()
        for key in ("aggregator", "attack", "fraction", "seed"):
            curve[key] = record[key]
        curves.append(curve)
    return pd.concat(curves, ignore_index=True) if curves else None


def dissensus_table(curves: pd.DataFrame) -> str:
    """Per aggregator and fraction: the honest consensus distance at rounds 5 and 20 (median
    over seeds, and each seed's at round 20) and the honest nodes' accuracy at round 20."""
    last = curves["round"].max()
    lines = [
        "| aggregator | attack | attackers | consensus dist. round 5 (median) "
        f"| round {last} (median) | round {last}, seeds 0/1/2 | node acc. mean | node acc. min |",
        "|---|---|---|---|---|---|---|---|",
    ]
    keys = ["aggregator", "attack", "fraction"]
    for (aggregator, attack, fraction), group in curves.groupby(keys, sort=False):
        early = group[group["round"] == 5]["consensus_distance"]
        final = group[group["round"] == last].sort_values("seed")
        seeds = "/".join(f"{value:.3g}" for value in final["consensus_distance"])
        lines.append(
            f"| {aggregator} | {attack} | {fraction:.0%} | {early.median():.3g} "
            f"| {final['consensus_distance'].median():.3g} | {seeds} "
            f"| {cell(final['node_accuracy_mean'])} | {cell(final['node_accuracy_min'])} |"
        )
    return "\n".join(lines) + "\n"


def dissensus_figure(curves: pd.DataFrame) -> Figure:
    """Consensus distance (median over seeds, from round 5) and honest accuracy (mean over seeds)
    against rounds: colour the attackers' share, line style the aggregator."""
    keys = ["aggregator", "attack", "fraction", "round"]
    median = curves.groupby(keys).median(numeric_only=True).reset_index()
    mean = curves.groupby(keys).mean(numeric_only=True).reset_index()
    figure = Figure(figsize=(10, 4))
    left, right = figure.subplots(1, 2)
    styles = {"mean": "-", "clipped_gossip": "--", "centered_clipping": ":"}
    colours = {0.0: "black", 0.1: "C0", 0.2: "C1", 0.3: "C3"}
    for (aggregator, _, fraction), curve in mean.groupby(keys[:3]):
        label = f"{aggregator}, " + (f"dissensus {fraction:.0%}" if fraction else "no attack")
        style = dict(linestyle=styles.get(aggregator, "-."), color=colours.get(fraction, "C4"))
        middle = median[
            (median["aggregator"] == aggregator)
            & (median["fraction"] == fraction)
            & (median["round"] > 0)
        ]
        left.semilogy(middle["round"], middle["consensus_distance"], label=label, **style)
        right.plot(curve["round"], curve["node_accuracy_mean"], label=label, **style)
    left.set(xlabel="round", ylabel="honest consensus distance", title="consensus, median of seeds")
    right.set(xlabel="round", ylabel="honest node accuracy (mean)", title="accuracy, mean of seeds")
    right.legend(fontsize=6, ncol=2)
    figure.suptitle(
        "D-PSGD, 10-regular graph, dissensus eps = 1: mean (solid), ClippedGossip adaptive "
        "(dashed), fixed tau = 1 (dotted)",
        fontsize=9,
    )
    figure.tight_layout()
    return figure


def main() -> None:
    RESULTS.mkdir(exist_ok=True)
    frame = collect()
    frame.to_csv(RESULTS / "byzantine.csv", index=False, float_format="%.6g")
    done = frame[frame["status"] != "n/a"]
    print(
        f"{len(frame)} rows ({len(frame) - len(done)} n/a); statuses:",
        frame["status"].value_counts().to_dict(),
    )
    (RESULTS / "table.md").write_text(table(frame))
    (RESULTS / "table_compact.md").write_text(table(frame, compact=True))
    (RESULTS / "orderings.md").write_text(orderings(frame))
    flip = label_flip_table(frame)
    if flip is not None:
        (RESULTS / "label_flip.md").write_text(flip)
    for setting in ("fl", "gossip"):
        figure = heatmap(frame, setting, MAIN_PARTS)
        if figure is not None:
            figure.savefig(RESULTS / f"heatmap_{setting}.png", dpi=130, bbox_inches="tight")
    curves = dissensus_curves()
    if curves is not None:
        curves.to_csv(RESULTS / "dissensus.csv", index=False, float_format="%.6g")
        (RESULTS / "dissensus.md").write_text(dissensus_table(curves))
        dissensus_figure(curves).savefig(RESULTS / "dissensus.png", dpi=130)


if __name__ == "__main__":
    main()
