"""DADAO's distance to the optimum on an L2-regularised convex problem (the spec's small-task
target, ../shared/papers/seed-wave-2.md section 3): (1/n) sum_i |X_i - x*|^2 against simulated
time, and the local gradients it takes to reach a precision as the condition number L/mu grows.

fedsim trains cross-entropy models, so the problem is the paper's other objective,
L2-regularised (multinomial) logistic regression: ``model=logreg`` on the LEAF synthetic
features (``data=synthetic``, 10 features, 10 classes), 10 nodes with Dirichlet(0.5) label
skew on a connected Erdős-Rényi graph, full local gradients (the batch size is the largest
node's data).  As the official code does with
scikit-learn, the constants come from the data: mu = l2 (a lower bound) and L = l2 +
max_i lambda_max(mean over node i of [x, 1][x, 1]^T) / 2 (an upper bound: the softmax
curvature is at most 1/2), and l2 is chosen to give the target L/mu.  x* minimises
(1/n) sum_i f_i(x) + (l2/2)|x|^2 (f_i node i's mean cross-entropy), found in float64 by
Newton's method on the same node data fedsim built.

Each run is a real fedsim simulation (built from the Hydra config as ``fedsim run`` builds it),
driven round by round so that the distance to x* can be taken after every round.

Usage: python experiments/seed_wave_2/dadao/linear_decay.py  (writes results/linear_decay.csv);
``linear_decay.py --smoothness OVERRIDES...`` prints max_i lambda_max / 2 of another set-up.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import torch
from hydra import compose, initialize_config_dir
from torch.func import functional_call

import fedsim.schemas  # noqa: F401  (registers the schemas the YAML files extend)
from fedsim.build import build_simulation
from fedsim.config import config_dir

RESULTS = Path(__file__).resolve().parent / "results"
COMMON = (
    "progress=false", "data=synthetic", "data.dimension=10", "model=logreg", "num_nodes=10",
    "partition=dirichlet", "topology=erdos_renyi", "topology.p=0.5", "topology.connected=true",
    "strategy=dadao",
)  # fmt: skip
PERIOD = 4.0  # simulated time per round
# (L/mu, communication rate (None: sqrt(2 chi1 chi2)), rounds): L/mu four-fold apart, so
# sqrt(L/mu) doubles; and the official argparse default rate 1.0, well below sqrt(2 chi1 chi2).
RUNS = ((8.0, None, 14), (32.0, None, 32), (8.0, 1.0, 10))


def build(*overrides: str, common: tuple[str, ...] = COMMON):
    """The simulation ``fedsim run`` would build with these overrides."""
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return build_simulation(compose("config", overrides=[*common, *overrides]))


def node_losses(simulation):
    """f_i(x) for every node, a function of the flat float64 parameters."""
    task = simulation.task
    model = task.model.double()
    x, y = task.dataset.train_x.double(), task.dataset.train_y
    shards = [
        task.node_data.table[i, : task.node_data.counts[i]]
        for i in range(len(task.node_data.counts))
    ]

    def loss(node: int, flat: torch.Tensor) -> torch.Tensor:
        logits = functional_call(model, task.layout.unflatten(flat), (x[shards[node]],))
        return torch.nn.functional.cross_entropy(logits, y[shards[node]])

    return loss, [x[shard] for shard in shards]


def smoothness_of_data(features: list[torch.Tensor]) -> float:
    """max_i lambda_max(mean of [x, 1][x, 1]^T over node i) / 2: L of the softmax losses."""
    largest = 0.0
    for rows in features:
        augmented = torch.cat([rows.flatten(1), torch.ones(len(rows), 1, dtype=rows.dtype)], 1)
        second_moment = augmented.T @ augmented / len(rows)
        largest = max(largest, float(torch.linalg.eigvalsh(second_moment)[-1]))
    return largest / 2


def optimum(loss, num_nodes: int, size: int, l2: float) -> torch.Tensor:
    """x* of (1/n) sum_i f_i + (l2/2)|x|^2, by Newton's method in float64."""

    def objective(flat: torch.Tensor) -> torch.Tensor:
        return sum(loss(i, flat) for i in range(num_nodes)) / num_nodes + l2 / 2 * flat @ flat

    point = torch.zeros(size, dtype=torch.float64)
    for _ in range(30):
        gradient = torch.autograd.functional.jacobian(objective, point)
        if float(gradient.norm()) < 1e-12:
            return point
        hessian = torch.autograd.functional.hessian(objective, point, vectorize=True)
        point = point - torch.linalg.solve(hessian, gradient)
    raise RuntimeError("Newton's method did not converge")


def run(condition: float, rate: float | None, rounds: int) -> pd.DataFrame:
    """One DADAO run at L/mu = ``condition`` and communication rate ``rate``: the distance to
    x* after every round."""
    probe = build()
    loss, features = node_losses(probe)
    batch = int(probe.task.node_data.num_examples.max())  # full local gradients
    smoothness = smoothness_of_data(features)
    l2 = smoothness / (condition - 1)  # (l2 + smoothness) / l2 = condition
    simulation = build(
        f"strategy.l2={l2}", f"strategy.strong_convexity={l2}",
        f"strategy.smoothness={l2 + smoothness}", f"strategy.period={PERIOD}",
        f"strategy.communication_rate={'null' if rate is None else rate}",
        f"optimizer.batch_size={batch}",
    )  # fmt: skip
    task, federation, strategy = simulation.task, simulation.federation, simulation.strategy
    num_nodes = federation.num_nodes
    target = optimum(loss, num_nodes, task.layout.size, l2)
    backend = simulation.backend
    backend.start(task, num_nodes, simulation.aggregator, federation.topology, simulation.messages)
    rows = []

    def record(round_idx: int) -> None:
        distance = (backend.params[:num_nodes].double() - target).square().sum() / num_nodes
        rows.append(
            {
                "condition": condition, "l2": l2, "L": l2 + smoothness, "round": round_idx,
                "communication_rate": strategy.constants(federation)[1],
                "time": round_idx * PERIOD, "distance": float(distance),
                "gradient_events": strategy.counts["gradient_events"],
                "communication_events": strategy.counts["communication_events"],
                "floats_sent": 2 * task.layout.size * strategy.counts["communication_events"],
            }
        )  # fmt: skip

    record(0)
    for round_idx in range(rounds):
        backend.execute(strategy.plan(round_idx, federation), round_idx)
        record(round_idx + 1)
    return pd.DataFrame(rows)


def main() -> None:
    torch.set_num_threads(1)
    if sys.argv[1:2] == ["--smoothness"]:  # L of the softmax losses of another set-up
        _, features = node_losses(build(*sys.argv[2:], common=("progress=false",)))
        print(smoothness_of_data(features))
        return
    RESULTS.mkdir(parents=True, exist_ok=True)
    table = pd.concat([run(*settings) for settings in RUNS], ignore_index=True)
    table.to_csv(RESULTS / "linear_decay.csv", index=False)
    print(table.to_string())


if __name__ == "__main__":
    main()
