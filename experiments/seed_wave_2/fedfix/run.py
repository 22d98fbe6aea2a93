"""FedFix against asynchronous and synchronous FedAvg on heterogeneous client speeds
(Fraboni et al., JMLR 2023; ../../../../shared/papers/seed-wave-2.md §2, must-show 2).

Digits, 10 clients, Dirichlet(0.1) label skew, logistic regression with L2 weight decay,
scenario F-80 (client i takes tau_i = 1 - 0.8 i / 9 time units per task: client 0 is the
slowest, client 9 five times faster), one local SGD step of batch 64 per task (the code's
n_SGD = 1), p uniform, eta_g = 1.  Schemes (the code's names):

- ``FL``: ``strategy=fedavg``, all 10 clients every round, uniform weights: one round per
  time unit (the slowest task).
- ``FedFix-0.5_weight``, ``FedFix-0.2_weight``: ``strategy=fedfix strategy.period=dt``.
- ``Async_weight``, ``Async_identical``: ``strategy=fedfix strategy.period=null`` with
  ``strategy.weights=weight|identical``.
- ``FedBuff-5_identical``: ``strategy=fedbuff`` with all 10 clients training, K = 5,
  ``staleness=constant`` (d = 1/5).

Every run is a real fedsim simulation, composed by Hydra from ``configs/`` as ``fedsim run``
composes it and built by ``build_simulation``; this script steps it round by round (the
engine's ``_start`` / ``_round``, as the tests do) because the metric at stake is not one
fedsim records: the *federated* objective ``F(x) = (1/M) sum_i f_i(x) + lambda/2 ||x||^2``
(f_i: client i's mean cross-entropy on its own training examples) of the server model, and
the Async_identical *surrogate* ``F_surr`` with weights ``q_i ∝ 1 / tau_i`` (the code's
``P_surr``).  Both are evaluated in float64 every ``--eval-every`` time units of simulated
time (at the first server step at or after each instant).  Their minima ``F*`` and
``F_surr*``, and ``F(x_surr*)`` (the federated objective at the surrogate's minimiser: where
Async_identical should end up) are computed per seed by full-batch L-BFGS in float64.

Writes ``results/curves.csv`` (scheme, seed, time, round, F - F*, F_surr - F_surr*,
cross-entropy, test accuracy), ``results/reference.csv`` (per seed: F*, F_surr*,
F(x_surr*) - F*), ``results/summary.csv`` / ``summary.md`` (per scheme: the mean over the last
quarter of its horizon, mean and spread over seeds) and ``results/loss_vs_time.png``.

Usage (from the repository root): python experiments/seed_wave_2/fedfix/run.py [--jobs 2]
[--replot: the tables and the figure again from results/curves.csv and reference.csv]
"""

from __future__ import annotations

import argparse
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one torch thread per run: ~6x faster here

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
NUM_CLIENTS = 10
SCENARIO = 80  # F-80
SCHEMES = {
    "FL": ("strategy=fedavg", "strategy.sample_size=10", "strategy.weighting=uniform"),
    "FedFix-0.5_weight": ("strategy=fedfix", "strategy.period=0.5"),
    "FedFix-0.2_weight": ("strategy=fedfix", "strategy.period=0.2"),
    "Async_weight": ("strategy=fedfix", "strategy.period=null", "strategy.weights=weight"),
    "Async_identical": ("strategy=fedfix", "strategy.period=null", "strategy.weights=identical"),
    "FedBuff-5_identical": (
        "strategy=fedbuff", "strategy.concurrency=10", "strategy.buffer_size=5",
        "strategy.staleness=constant",
    ),
}  # fmt: skip
FAST = ("Async_weight", "Async_identical", "FedBuff-5_identical", "FedFix-0.2_weight")
"""Schemes that step many times per time unit: their curves are flat long before FL's, and they
run to ``--fast-horizon`` (the others to ``--horizon``) to keep the study within an hour here."""
STYLES = {
    "FL": ("#1f77b4", "-"),
    "FedFix-0.5_weight": ("#d62728", "-"),
    "FedFix-0.2_weight": ("#d62728", "--"),
    "Async_weight": ("#2ca02c", "-"),
    "Async_identical": ("#ff7f0e", "-"),
    "FedBuff-5_identical": ("#637939", ":"),
}


def tau() -> np.ndarray:
    """The official code's ``get_tau_i``: 1 - i (X / 100) / (M - 1)."""
    return np.array([1 - i * SCENARIO / 100 / (NUM_CLIENTS - 1) for i in range(NUM_CLIENTS)])


def overrides(scheme: str, seed: int, args: argparse.Namespace, speeds: Path) -> list[str]:
    return [
        f"num_nodes={NUM_CLIENTS}", f"seed={seed}", "data=digits", "model=logreg",
        "partition=dirichlet", "partition.alpha=0.1",
        "optimizer=sgd", f"optimizer.lr={args.lr}", f"optimizer.weight_decay={args.weight_decay}",
        "optimizer.batch_size=64",
        # tau_i seconds per task: one step at the file's seconds per step, transfers free
        "network=file", f"network.compute_file={speeds}", "network.unit=step",
        "network.latency=constant", "network.latency_file=null", "network.latency_s=0",
        "network.upload_mbps=inf", "network.download_mbps=inf",
        "strategy.local_epochs=null", "strategy.local_steps=1",
        "rounds=10000000", "eval_every=10000000", "checkpoint_every=0", "progress=false",
        *SCHEMES[scheme],
    ]  # fmt: skip


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    import fedsim.schemas  # noqa: F401  (registers the schemas the YAML files extend)
    from fedsim.config import config_dir

    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return hydra_compose("config", overrides=overrides)


class Objective:
    """``sum_i w_i f_i(x) + lambda/2 ||x||^2`` in float64 on the clients' training examples."""

    def __init__(self, simulation, weight_decay: float) -> None:
        task = simulation.task
        self.model, self.layout, self.weight_decay = task.model, task.layout, weight_decay
        data = task.dataset
        table, counts = task.node_data.table, task.node_data.counts
        self.shards = [
            (data.train_x[table[i, :c]].double(), data.train_y[table[i, :c]])
            for i, c in enumerate(counts.tolist())
        ]
        self.test = (data.test_x.double(), data.test_y)

    def logits(self, flat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        from torch.func import functional_call

        return functional_call(self.model, self.layout.unflatten(flat), (x,))

    def losses(self, flat: torch.Tensor) -> torch.Tensor:
        """Each client's mean cross-entropy, (M,)."""
        return torch.stack([
            torch.nn.functional.cross_entropy(self.logits(flat, x), y) for x, y in self.shards
        ])  # fmt: skip

    def __call__(self, flat: torch.Tensor, weights: np.ndarray) -> torch.Tensor:
        w = torch.as_tensor(weights, dtype=torch.float64)
        return w @ self.losses(flat) + self.weight_decay / 2 * flat.pow(2).sum()

    def accuracy(self, flat: torch.Tensor) -> float:
        x, y = self.test
        return float((self.logits(flat, x).argmax(-1) == y).double().mean())

    def minimum(self, weights: np.ndarray, size: int) -> torch.Tensor:
        """The minimiser, by full-batch L-BFGS from 0 (strongly convex: unique)."""
        flat = torch.zeros(size, dtype=torch.float64, requires_grad=True)
        optimizer = torch.optim.LBFGS(
            [flat], lr=1, max_iter=5000, tolerance_grad=1e-12, tolerance_change=1e-15,
            history_size=50, line_search_fn="strong_wolfe",
        )  # fmt: skip

        def closure():
            optimizer.zero_grad()
            value = self(flat, weights)
            value.backward()
            return value

        for _ in range(20):
            optimizer.step(closure)
        return flat.detach()


def weights() -> dict[str, np.ndarray]:
    """The federated (uniform p) and surrogate (1 / tau normalised) client weights."""
    inverse = 1 / tau()
    return {"F": np.full(NUM_CLIENTS, 1 / NUM_CLIENTS), "F_surr": inverse / inverse.sum()}


def reference(seed: int, args: argparse.Namespace, speeds: Path) -> dict[str, float]:
    """Per seed (its partition): F*, F_surr* and F(x_surr*) - F*, ||x* - x_surr*||."""
    from fedsim.build import build_simulation

    torch.set_num_threads(1)
    simulation = build_simulation(compose(overrides("FL", seed, args, speeds)))
    objective = Objective(simulation, args.weight_decay)
    size = simulation.task.layout.size
    w = weights()
    with torch.enable_grad():
        x_star, x_surr = objective.minimum(w["F"], size), objective.minimum(w["F_surr"], size)
    with torch.no_grad():
        f_star = float(objective(x_star, w["F"]))
        f_surr_star = float(objective(x_surr, w["F_surr"]))
        gap = float(objective(x_surr, w["F"])) - f_star
        surr_gap = float(objective(x_star, w["F_surr"])) - f_surr_star
        grad_norms = []
        for x, key in ((x_star, "F"), (x_surr, "F_surr")):
            x = x.clone().requires_grad_(True)
            with torch.enable_grad():
                objective(x, w[key]).backward()
            grad_norms.append(float(x.grad.norm()))
    return {
        "seed": seed, "F_star": f_star, "F_surr_star": f_surr_star,
        "F_at_x_surr_minus_F_star": gap, "F_surr_at_x_star_minus_F_surr_star": surr_gap,
        "distance_x_star_x_surr": float((x_star - x_surr).norm()),
        "grad_norm_at_x_star": grad_norms[0], "grad_norm_at_x_surr": grad_norms[1],
        "accuracy_x_star": objective.accuracy(x_star),
        "accuracy_x_surr": objective.accuracy(x_surr),
        "client_examples": " ".join(map(str, simulation.task.node_data.num_examples.tolist())),
    }  # fmt: skip


def horizon(scheme: str, args: argparse.Namespace) -> float:
    return args.fast_horizon if scheme in FAST else args.horizon


def run(job: tuple[str, int, argparse.Namespace, Path, dict[str, float]]) -> pd.DataFrame:
    """One scheme, one seed: the objectives every ``eval_every`` time units up to its horizon."""
    scheme, seed, args, speeds, ref = job
    from fedsim.build import build_simulation

    torch.set_num_threads(1)
    started = time.perf_counter()
    simulation = build_simulation(compose(overrides(scheme, seed, args, speeds)))
    objective = Objective(simulation, args.weight_decay)
    w = weights()
    simulation._start()
    rows, next_eval, round_idx = [], 0.0, 0
    while True:
        now = simulation.clock.now
        if now >= next_eval - 1e-9:
            with torch.no_grad():
                x = simulation.global_model().double()
                losses = objective.losses(x)
                reg = args.weight_decay / 2 * float(x.pow(2).sum())
                rows.append({
                    "scheme": scheme, "seed": seed, "time": now, "round": round_idx,
                    "F_minus_F_star": float(w["F"] @ losses.numpy()) + reg - ref["F_star"],
                    "F_surr_minus_F_surr_star":
                        float(w["F_surr"] @ losses.numpy()) + reg - ref["F_surr_star"],
                    "cross_entropy_uniform": float(losses.mean()),
                    "test_accuracy": objective.accuracy(x),
                })  # fmt: skip
            next_eval = (np.floor(now / args.eval_every + 1e-9) + 1) * args.eval_every
            if now >= horizon(scheme, args) - 1e-9 or not np.isfinite(rows[-1]["F_minus_F_star"]):
                break
        simulation._round(round_idx)
        round_idx += 1
    frame = pd.DataFrame(rows)
    print(
        f"{scheme:>20} seed {seed}: {round_idx} server steps, "
        f"{time.perf_counter() - started:.0f} s, final F - F* {frame.F_minus_F_star.iloc[-1]:.4g}",
        flush=True,
    )
    return frame


def summarise(curves: pd.DataFrame, refs: pd.DataFrame, args: argparse.Namespace) -> pd.DataFrame:
    """Per scheme and seed the mean over the last quarter of its horizon, then over seeds."""
    ends = curves.scheme.map(lambda scheme: horizon(scheme, args))
    tail = curves[curves.time >= 0.75 * ends]
    per_seed = tail.groupby(["scheme", "seed"])[
        ["F_minus_F_star", "F_surr_minus_F_surr_star", "cross_entropy_uniform", "test_accuracy"]
    ].mean()
    per_seed["tail_std_F"] = tail.groupby(["scheme", "seed"]).F_minus_F_star.std()
    gap = refs.set_index("seed").F_at_x_surr_minus_F_star
    per_seed["F_excess_over_surrogate_gap"] = (
        per_seed.F_minus_F_star / gap.reindex(per_seed.index.get_level_values("seed")).to_numpy()
    )
    rounds = curves.groupby(["scheme", "seed"])["round"].max()
    per_seed["server_steps"] = rounds
    per_seed = per_seed.reset_index()
    per_seed["horizon"] = per_seed.scheme.map(lambda scheme: horizon(scheme, args))
    summary = per_seed.groupby("scheme").agg(["mean", "std"])
    summary.columns = [f"{a}_{b}" for a, b in summary.columns]
    summary = summary.drop(columns=["seed_mean", "seed_std"]).reindex(list(SCHEMES))
    per_seed.to_csv(RESULTS / "summary_per_seed.csv", index=False)
    return summary


def markdown(summary: pd.DataFrame, refs: pd.DataFrame, args: argparse.Namespace) -> str:
    lines = [
        f"eta_l {args.lr:g}, lambda {args.weight_decay:g}, seeds "
        f"{', '.join(map(str, args.seeds))}; each run to its horizon (time units; the slowest "
        "client's task takes 1), the mean over its last quarter, then mean ± std over seeds.",
        "",
        "| scheme | horizon | server steps | F − F* | F_surr − F_surr* "
        "| (F − F*) / (F(x_surr*) − F*) | tail std of F | test accuracy |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for scheme, row in summary.iterrows():
        lines.append(
            f"| {scheme} | {row.horizon_mean:g} | {row.server_steps_mean:.0f} "
            f"| {row.F_minus_F_star_mean:.4f} ± {row.F_minus_F_star_std:.4f} "
            f"| {row.F_surr_minus_F_surr_star_mean:.4f} ± {row.F_surr_minus_F_surr_star_std:.4f} "
            f"| {row.F_excess_over_surrogate_gap_mean:.2f} "
            f"± {row.F_excess_over_surrogate_gap_std:.2f} "
            f"| {row.tail_std_F_mean:.4f} | {row.test_accuracy_mean:.3f} |"
        )
    lines += [
        "",
        "Reference (full-batch L-BFGS, float64), per seed: F*, F_surr*, F(x_surr*) − F* "
        "(the plateau Async_identical should reach), ||x* − x_surr*||.",
        "",
        "| seed | F* | F_surr* | F(x_surr*) − F* | F_surr(x*) − F_surr* | ‖x* − x_surr*‖ |",
        "|---|---|---|---|---|---|",
    ]
    for _, ref in refs.iterrows():
        lines.append(
            f"| {ref.seed} | {ref.F_star:.4f} | {ref.F_surr_star:.4f} "
            f"| {ref.F_at_x_surr_minus_F_star:.4f} | {ref.F_surr_at_x_star_minus_F_surr_star:.4f} "
            f"| {ref.distance_x_star_x_surr:.3f} |"
        )
    return "\n".join(lines) + "\n"


def figure(curves: pd.DataFrame, refs: pd.DataFrame, eval_every: float) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.2), layout="constrained")
    federated, surrogate = fig.subplots(1, 2, sharex=True)
    gap = refs.F_at_x_surr_minus_F_star.mean()
    for scheme in SCHEMES:
        runs = curves[curves.scheme == scheme]
        if runs.empty:
            continue
        instant = np.floor(runs.time / eval_every + 1e-9) * eval_every  # seeds' common grid
        mean = runs.groupby(instant)[["F_minus_F_star", "F_surr_minus_F_surr_star"]].mean()
        colour, style = STYLES[scheme]
        federated.plot(mean.index, mean.F_minus_F_star, style, color=colour, label=scheme)
        surrogate.plot(mean.index, mean.F_surr_minus_F_surr_star, style, color=colour)
    federated.axhline(gap, color="grey", lw=0.8, ls="-.", label="F(x_surr*) − F*")
    for axes, title in (
        (federated, "federated objective (p uniform): F − F*"),
        (surrogate, "Async_identical's surrogate (q ∝ 1/τ): F_surr − F_surr*"),
    ):
        axes.set_yscale("log")
        axes.set_xlabel("simulated time (slowest client's task = 1)")
        axes.set_title(title, fontsize=10)
        axes.grid(alpha=0.3)
    federated.legend(fontsize=8)
    fig.suptitle("Digits, 10 clients, Dirichlet(0.1), F-80, logistic regression: mean of seeds")
    fig.savefig(RESULTS / "loss_vs_time.png", dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--schemes", nargs="+", default=list(SCHEMES), choices=list(SCHEMES))
    parser.add_argument("--horizon", type=float, default=1000.0, help="simulated time units")
    parser.add_argument(
        "--fast-horizon", type=float, default=300.0, help="of the FAST schemes: time units"
    )
    parser.add_argument("--eval-every", type=float, default=2.0, help="simulated time units")
    parser.add_argument("--lr", type=float, default=0.1, help="eta_l")
    parser.add_argument("--weight-decay", type=float, default=0.01, help="lambda")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument(
        "--replot", action="store_true", help="only the tables and figure, from results/"
    )
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    speeds = RESULTS / "f80_seconds_per_step.txt"
    speeds.write_text("".join(f"{float(t)!r}\n" for t in tau()))
    if args.replot:  # the tables and the figure again, from the curves of an earlier run
        curves = pd.read_csv(RESULTS / "curves.csv")
        refs = pd.read_csv(RESULTS / "reference.csv")
        report(curves, refs, args)
        return
    started = time.perf_counter()
    with ProcessPoolExecutor(args.jobs) as pool:
        refs = pd.DataFrame(pool.map(reference, args.seeds, [args] * len(args.seeds),
                                     [speeds] * len(args.seeds)))  # fmt: skip
        refs.to_csv(RESULTS / "reference.csv", index=False)
        by_seed = refs.set_index("seed").to_dict("index")
        jobs = [(scheme, seed, args, speeds, by_seed[seed])
                for scheme in args.schemes for seed in args.seeds]  # fmt: skip
        jobs.sort(key=lambda job: not job[0].startswith("Async"))  # the long ones first
        curves = pd.concat(pool.map(run, jobs), ignore_index=True)
    curves.to_csv(RESULTS / "curves.csv", index=False, float_format="%.6g")
    print(f"done in {time.perf_counter() - started:.0f} s")
    report(curves, refs, args)


def report(curves: pd.DataFrame, refs: pd.DataFrame, args: argparse.Namespace) -> None:
    summary = summarise(curves, refs, args)
    summary.to_csv(RESULTS / "summary.csv", float_format="%.6g")
    (RESULTS / "summary.md").write_text(markdown(summary, refs, args))
    figure(curves, refs, args.eval_every)
    print((RESULTS / "summary.md").read_text())


if __name__ == "__main__":
    main()
