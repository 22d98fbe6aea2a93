"""The Byzantine-robustness sweep (issue 19): attacks x robust aggregators, FL and gossip.

Every run is a real fedsim run: its config is composed by Hydra from ``configs/`` exactly as
``fedsim run OVERRIDES`` composes it, and ``fedsim.runner.run_job`` (what ``fedsim run`` calls
for each job) runs it and writes ``summary.json`` and ``metrics.parquet`` into
``runs/<part>/<setting>/<aggregator>/<attack>/frac<fraction>_seed<seed>/``.  The runs share one
Python process because composing and starting a process cost more than a 30-round run
(about 1 s and 8 s against 1.5-3 s); each run's overrides are written to its ``run.json``, so
``fedsim run $(jq -r '.overrides | join(" ")' run.json)`` repeats it.  For speed the config is
composed once per choice of groups (setting, aggregator, attack) and the scalar settings
(seed, fractions, f, beta) are then set on a copy; the first run of every such group is checked
against a full compose of its overrides.

``aggregator.f`` is the number of attackers a receiver can get: in FL every client is a sender
to the server, so all the attackers; in gossip the largest number of Byzantine neighbours of
any honest node on the run's graph, read from the run's own build (graph and attackers both
come from the seed).  Trimmed mean drops as many values per end: ``beta = f / k`` for ``k``
models received.  Where fedsim refuses the combination (Krum needs k > 2f + 2, Bulyan
k >= 4f + 3, trimmed mean beta < 0.5) the ConfigError is recorded in ``run.json`` as n/a.

Parts (``--part``, in the order run.sh runs them):

- ``fl``: FedAvg, 20 clients all taking part every round, uniform weights; attacks sign_flip
  (scale 1), gaussian (std 200), alie (EPFL code z), ipm (epsilon 0.1) at fractions 0.1, 0.2,
  0.3; ``attack=none`` with every aggregator at f = 0 and, for the aggregators that depend on f
  (trimmed_mean, krum, multi_krum, bulyan), at the f of each fraction.
- ``gossip``: the same on D-PSGD over a random 10-regular graph (Metropolis-Hastings weights).
- ``one_attacker``: FL with one attacker of 20 (fraction 0.05) sending -100x its update or
  N(0, 200^2): reproduction target 1 (the mean breaks, the robust aggregators do not).
- ``alie_paper``: ALIE with the paper's z (Phi^-1((n-s)/n), larger) in both settings.
- ``alie_z1``: ALIE with an explicit z = 1 (larger than either formula gives at n = 20).
- ``alie_sgd``: FL as distributed SGD (one mini-batch step per client and round, 200 rounds),
  20% attackers: sign flip against ALIE (both forms) for mean, CM, TM, Krum and CC.
- ``label_flip``: data poisoning (the Byzantine nodes train honestly on labels 9 - y) in both
  settings, every aggregator, the fractions and f/beta of ``fl``/``gossip`` (whose attack-free
  runs are its reference): byzantine.md §5 item 5, the negative control.
- ``dissensus``: gossip under the dissensus attack, aggregator mean vs clipped_gossip
  (needs configs/attack/dissensus.yaml and configs/aggregator/clipped_gossip.yaml).

Usage: python experiments/byzantine/sweep.py --part fl [--rounds 30] [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import time
import warnings
from pathlib import Path

import torch
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import fedsim.schemas  # noqa: F401  (registers the schemas the YAML files extend)
from fedsim.build import build_simulation
from fedsim.config import GROUPS, config_dir
from fedsim.errors import ConfigError
from fedsim.runner import run_job

HERE = Path(__file__).resolve().parent
RUNS = HERE / "runs"
NUM_NODES = 20
DEGREE = 10  # gossip: each node receives 11 models (its own and 10 neighbours')
AGGREGATORS = [
    "mean",
    "median",
    "trimmed_mean",
    "krum",
    "multi_krum",
    "geometric_median",
    "centered_clipping",
    "bulyan",
]
DEPENDS_ON_F = {"trimmed_mean", "krum", "multi_krum", "bulyan"}
ATTACKS = ["sign_flip", "gaussian", "alie", "ipm"]
FRACTIONS = [0.1, 0.2, 0.3]


def settings(rounds: int, eval_every: int) -> dict[str, list[str]]:
    common = [
        f"num_nodes={NUM_NODES}",
        f"rounds={rounds}",
        f"eval_every={eval_every}",
        "checkpoint_every=0",
        "progress=false",
    ]
    return {
        "fl": [
            *common,
            "strategy=fedavg",
            f"strategy.sample_size={NUM_NODES}",  # all 20 clients every round
            "strategy.weighting=uniform",  # the papers' 1/n; no client-reported weights
        ],
        "gossip": [
            *common,
            "strategy=dpsgd",
            "topology=regular",
            f"topology.degree={DEGREE}",
        ],
    }


class Composer:
    """Hydra configs, composed once per choice of groups, scalars set on copies."""

    def __init__(self) -> None:
        self.cache: dict[tuple[str, ...], object] = {}

    def __call__(self, overrides: list[str]):
        groups = tuple(o for o in overrides if o.split("=")[0] in GROUPS)
        scalars = [o for o in overrides if o.split("=")[0] not in GROUPS]
        fresh = groups not in self.cache
        if fresh:
            self.cache[groups] = compose("config", overrides=list(groups))
        cfg = copy.deepcopy(self.cache[groups])
        for override in scalars:
            key, value = override.split("=", 1)
            OmegaConf.update(cfg, key, yaml.safe_load(value), merge=False)
        if fresh:  # the shortcut gives what a full compose gives
            full = compose("config", overrides=overrides)
            assert OmegaConf.to_container(full) == OmegaConf.to_container(cfg), overrides
        return cfg


def byzantine_per_receiver(composer: Composer, base: list[str], fraction: float, seed: int):
    """(attackers, most Byzantine senders any honest receiver gets, fewest models received)
    in the run with these settings, from its own build (the graph and the attackers)."""
    if fraction == 0:
        return 0, 0, None
    attack = ["attack=sign_flip", f"attack.fraction={fraction}"]
    cfg = composer([*base, "aggregator=mean", *attack, f"seed={seed}"])
    simulation = build_simulation(cfg)
    byzantine = set(simulation.messages.byzantine_nodes().tolist())
    topology = simulation.federation.topology
    if topology is None:  # FL: every client sends to the server
        return len(byzantine), len(byzantine), NUM_NODES
    graph = topology.graph(0)
    honest = [node for node in graph.nodes if node not in byzantine]
    most = max(sum(1 for j in graph.neighbors(i) if j in byzantine) for i in honest)
    fewest = min(graph.degree(i) for i in graph.nodes) + 1  # its own model too
    return len(byzantine), most, fewest


def aggregator_overrides(aggregator: str, f: int, received: int | None) -> list[str]:
    if aggregator == "trimmed_mean":
        return [f"aggregator.beta={f / received if f else 0.0}"]
    if aggregator in ("krum", "multi_krum", "bulyan"):
        return [f"aggregator.f={f}"]
    return []


def run_one(composer: Composer, folder: Path, overrides: list[str], record: dict) -> None:
    if (folder / "run.json").exists():
        return
    folder.mkdir(parents=True, exist_ok=True)
    record = {**record, "overrides": overrides}
    started = time.perf_counter()
    try:
        cfg = composer(overrides)
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            summary = run_job(cfg, folder)
        record["status"] = summary["status"]
    except ConfigError as error:
        record["status"] = "n/a"
        record["config_error"] = str(error)
    record["seconds"] = round(time.perf_counter() - started, 2)
    (folder / "run.json").write_text(json.dumps(record, indent=1))
    print(f"{record['seconds']:6.2f}s {record['status']:9} {folder.relative_to(RUNS)}", flush=True)


def run_name(fraction: float, seed: int) -> str:
    return f"frac{fraction}_seed{seed}"


def grid(part, setting, attacks, fractions, aggregators, seeds, base, composer, extra=()):
    """Every (aggregator, attack, fraction, seed) of one setting, plus the attack-free runs."""
    for seed in seeds:
        for fraction in fractions:
            attackers, f, received = byzantine_per_receiver(composer, base, fraction, seed)
            for aggregator in aggregators:
                agg = aggregator_overrides(aggregator, f, received)
                for attack in attacks:
                    name, attack_overrides = attack
                    if name == "none":  # no attackers; the aggregator set for this fraction
                        attack_overrides = ["attack=none"]
                    else:
                        attack_overrides = [*attack_overrides, f"attack.fraction={fraction}"]
                    overrides = [
                        *base,
                        f"aggregator={aggregator}",
                        *attack_overrides,
                        *agg,
                        f"seed={seed}",
                        *extra,
                    ]
                    folder = RUNS / part / setting / aggregator / name / run_name(fraction, seed)
                    record = dict(
                        setting=setting,
                        aggregator=aggregator,
                        attack=name,
                        fraction=fraction,
                        seed=seed,
                        attackers=0 if name == "none" else attackers,
                        f=f,
                        received=received,
                    )
                    run_one(composer, folder, overrides, record)
                # The attack-free run with the aggregator set for this fraction's f (the
                # aggregators that do not depend on f run once, at fraction 0).
                if part in ("fl", "gossip") and aggregator in DEPENDS_ON_F:
                    folder = RUNS / part / setting / aggregator / "none" / run_name(fraction, seed)
                    record = dict(
                        setting=setting,
                        aggregator=aggregator,
                        attack="none",
                        fraction=fraction,
                        seed=seed,
                        attackers=0,
                        f=f,
                        received=received,
                    )
                    overrides = [*base, f"aggregator={aggregator}", "attack=none", *agg]
                    overrides.append(f"seed={seed}")
                    run_one(composer, folder, overrides, record)
        if part in ("fl", "gossip"):
            for aggregator in aggregators:  # no attacker, f = 0 (beta = 0)
                folder = RUNS / part / setting / aggregator / "none" / f"frac0.0_seed{seed}"
                record = dict(
                    setting=setting,
                    aggregator=aggregator,
                    attack="none",
                    fraction=0.0,
                    seed=seed,
                    attackers=0,
                    f=0,
                    received=None,
                )
                overrides = [
                    *base,
                    f"aggregator={aggregator}",
                    "attack=none",
                    *aggregator_overrides(aggregator, 0, None),
                    f"seed={seed}",
                ]
                run_one(composer, folder, overrides, record)


def main() -> None:
    global RUNS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--part",
        required=True,
        choices=[
            "fl",
            "gossip",
            "one_attacker",
            "alie_paper",
            "alie_z1",
            "alie_sgd",
            "dissensus",
            "label_flip",
        ],
    )
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--runs", type=Path, default=RUNS, help="where the run folders go")
    args = parser.parse_args()
    RUNS = args.runs
    torch.set_num_threads(1)
    base = settings(args.rounds, eval_every=10)
    attacks = [(name, [f"attack={name}"]) for name in ATTACKS]
    composer = Composer()
    started = time.perf_counter()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        if args.part in ("fl", "gossip"):
            grid(
                args.part,
                args.part,
                attacks,
                FRACTIONS,
                AGGREGATORS,
                args.seeds,
                base[args.part],
                composer,
            )
        elif args.part == "one_attacker":
            one = [
                ("sign_flip_x100", ["attack=sign_flip", "attack.scale=100.0"]),
                ("gaussian", ["attack=gaussian"]),
            ]
            grid("one_attacker", "fl", one, [0.05], AGGREGATORS, args.seeds, base["fl"], composer)
        elif args.part in ("alie_paper", "alie_z1"):
            paper = [("alie_paper", ["attack=alie", "attack.z_form=paper"])]
            if args.part == "alie_z1":
                paper = [("alie_z1", ["attack=alie", "attack.z=1.0"])]
            for setting in ("fl", "gossip"):
                grid(
                    args.part,
                    setting,
                    paper,
                    FRACTIONS,
                    AGGREGATORS,
                    args.seeds,
                    base[setting],
                    composer,
                )
        elif args.part == "label_flip":
            # The attackers are drawn as for every attack (rng.ATTACK stream of the seed), so
            # they, f and beta are those of the fl/gossip runs at the same fraction and seed.
            flip = [("label_flip", ["attack=label_flip"])]
            for setting in ("fl", "gossip"):
                grid(
                    "label_flip",
                    setting,
                    flip,
                    FRACTIONS,
                    AGGREGATORS,
                    args.seeds,
                    base[setting],
                    composer,
                )
        elif args.part == "alie_sgd":
            # Distributed SGD as in Baruch et al.: every client sends one mini-batch step
            # (batch 8), 200 rounds; 20% attackers.
            sgd = [
                *settings(200, eval_every=50)["fl"],
                "strategy.local_epochs=null",
                "strategy.local_steps=1",
            ]
            attacks = [
                ("none", []),
                ("sign_flip", ["attack=sign_flip"]),
                ("alie", ["attack=alie"]),
                ("alie_paper", ["attack=alie", "attack.z_form=paper"]),
            ]
            aggregators = ["mean", "median", "trimmed_mean", "krum", "centered_clipping"]
            grid("alie_sgd", "fl", attacks, [0.2], aggregators, args.seeds, sgd, composer)
        else:
            dissensus(args, composer)
    print(f"part {args.part}: {time.perf_counter() - started:.0f} s")


def dissensus(args, composer: Composer) -> None:
    """Gossip under dissensus (epsilon 1): plain gossip averaging against ClippedGossip."""
    for needed in ("attack/dissensus.yaml", "aggregator/clipped_gossip.yaml"):
        if not (config_dir() / needed).exists():
            raise SystemExit(f"configs/{needed} does not exist yet")
    base = settings(args.rounds, eval_every=5)["gossip"]
    attacks = [("dissensus", ["attack=dissensus", "attack.epsilon=1.0"])]
    aggregators = ["mean", "clipped_gossip", "centered_clipping"]
    grid("dissensus", "gossip", attacks, FRACTIONS, aggregators, args.seeds, base, composer)
    for seed in args.seeds:  # attack-free references
        for aggregator in aggregators:
            folder = RUNS / "dissensus" / "gossip" / aggregator / "none" / f"frac0.0_seed{seed}"
            record = dict(
                setting="gossip",
                aggregator=aggregator,
                attack="none",
                fraction=0.0,
                seed=seed,
                attackers=0,
                f=0,
                received=None,
            )
            overrides = [*base, f"aggregator={aggregator}", "attack=none", f"seed={seed}"]
            run_one(composer, folder, overrides, record)


if __name__ == "__main__":
    main()
