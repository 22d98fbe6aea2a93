"""FedAvg on scikit-learn digits in plain torch: the no-framework baseline for the benchmark.

The most direct efficient code a researcher would write for McMahan et al. (2017),
"Communication-Efficient Learning of Deep Networks from Decentralized Data": one flat
global parameter vector, one reusable ``nn.Module`` and ``torch.optim.SGD``; each sampled
client copies the global parameters in, runs its mini-batches, and adds its parameters,
weighted by its number of examples, to a running sum that becomes the next global model.

Usage::

    python scripts/bare_fedavg.py --workload small --seed 0

Prints one JSON line: ``way``, ``workload``, ``total_s`` (from the top of this file,
before torch is imported, to the end), ``rounds_s`` (the round loop only),
``per_round_s`` and the final test ``accuracy``.
"""

import time

# Started before the heavy imports, so total_s counts them as the fedsim CLI's total does.
_SCRIPT_START = time.perf_counter()

import argparse  # noqa: E402
import json  # noqa: E402
from dataclasses import dataclass  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from torch import nn  # noqa: E402


@dataclass(frozen=True)
class Workload:
    """One benchmark workload: IID digits, uniform client sampling, SGD without momentum.

    The fixed test split takes ``test_fraction`` of digits' 1797 images (0.15: 270), leaving
    1527 train rows, enough for 100 nodes x 15 samples; ``tile`` repeats the train split
    (10x: 15270 rows for 1000 nodes x 15).
    """

    num_nodes: int
    sample_size: int
    rounds: int
    tile: int
    test_fraction: float = 0.15
    samples_per_node: int = 15
    local_epochs: int = 1
    batch_size: int = 16
    learning_rate: float = 0.05
    hidden: int = 128
    model: str = "mlp"  # mlp (64-hidden-10) or lenet5 (on digits resized to 28x28)

    def __post_init__(self) -> None:
        if not 1 <= self.sample_size <= self.num_nodes:
            raise ValueError(
                f"sample_size={self.sample_size} must lie in [1, num_nodes={self.num_nodes}]"
            )


WORKLOADS = {
    "small": Workload(num_nodes=100, sample_size=10, rounds=50, tile=1),
    "large": Workload(num_nodes=1000, sample_size=100, rounds=20, tile=10),
    "cnn": Workload(num_nodes=100, sample_size=100, rounds=10, tile=1, model="lenet5"),
}


def lenet5() -> nn.Module:
    """LeNet-5 with ReLU and max-pooling on (1, 28, 28) inputs (the first conv padded by 2)."""
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10),
    )  # fmt: skip


def as_images(features: np.ndarray) -> torch.Tensor:
    """8x8 digits resized to 28x28 (bilinear), as fedsim's ``digits(image_size=28)`` does."""
    images = torch.as_tensor(features, dtype=torch.float32).view(-1, 1, 8, 8)
    resized = nn.functional.interpolate(images, size=(28, 28), mode="bilinear", align_corners=False)
    return resized.clamp(0.0, 1.0)


def load_client_data(
    workload: Workload, generator: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Client inputs ``[nodes, samples, ...]``, client labels ``[nodes, samples]``, test x, y.

    The test split is stratified and fixed; the (tiled) train split is shuffled and node
    ``i`` gets rows ``[i * samples_per_node, (i + 1) * samples_per_node)``.
    """
    features, labels = load_digits(return_X_y=True)
    train_x, test_x, train_y, test_y = train_test_split(
        features / 16.0, labels, test_size=workload.test_fraction, stratify=labels, random_state=0
    )
    train_x, train_y = np.tile(train_x, (workload.tile, 1)), np.tile(train_y, workload.tile)
    used = workload.num_nodes * workload.samples_per_node
    order = generator.permutation(len(train_y))[:used]
    client_y = torch.as_tensor(train_y[order], dtype=torch.int64)
    if workload.model == "lenet5":
        client_x, test_inputs = as_images(train_x[order]), as_images(test_x)
    else:
        client_x = torch.as_tensor(train_x[order], dtype=torch.float32)
        test_inputs = torch.as_tensor(test_x, dtype=torch.float32)
    return (
        client_x.view(workload.num_nodes, workload.samples_per_node, *client_x.shape[1:]),
        client_y.view(workload.num_nodes, workload.samples_per_node),
        test_inputs,
        torch.as_tensor(test_y, dtype=torch.int64),
    )


def flat_views(flat: torch.Tensor, model: nn.Module) -> list[torch.Tensor]:
    """Views into ``flat`` shaped like each of ``model``'s parameters, in order."""
    shapes = [param.shape for param in model.parameters()]
    chunks = flat.split([shape.numel() for shape in shapes])
    return [chunk.view(shape) for chunk, shape in zip(chunks, shapes, strict=True)]


def train_client(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    workload: Workload,
) -> None:
    """Local SGD: ``local_epochs`` passes over shuffled mini-batches, in place on ``model``."""
    loss_fn = nn.functional.cross_entropy
    for _ in range(workload.local_epochs):
        for batch in torch.randperm(len(labels)).split(workload.batch_size):
            optimizer.zero_grad(set_to_none=True)
            loss_fn(model(inputs[batch]), labels[batch]).backward()
            optimizer.step()


def run_rounds(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    client_x: torch.Tensor,
    client_y: torch.Tensor,
    workload: Workload,
    generator: np.random.Generator,
) -> None:
    """All FedAvg rounds; leaves the final global model's parameters in ``model``."""
    parameters = list(model.parameters())
    global_flat = torch.cat([param.detach().flatten() for param in parameters])
    sum_flat = torch.empty_like(global_flat)
    global_params, sum_params = flat_views(global_flat, model), flat_views(sum_flat, model)
    for _ in range(workload.rounds):
        clients = generator.choice(workload.num_nodes, size=workload.sample_size, replace=False)
        sum_flat.zero_()
        total_examples = 0
        for client in clients.tolist():
            with torch.no_grad():
                for param, global_param in zip(parameters, global_params, strict=True):
                    param.copy_(global_param)
            train_client(model, optimizer, client_x[client], client_y[client], workload)
            num_examples = len(client_y[client])
            with torch.no_grad():
                for total, param in zip(sum_params, parameters, strict=True):
                    total.add_(param, alpha=num_examples)
            total_examples += num_examples
        torch.div(sum_flat, total_examples, out=global_flat)
    with torch.no_grad():
        for param, global_param in zip(parameters, global_params, strict=True):
            param.copy_(global_param)


def main() -> None:
    """Parse the CLI, run the workload and print the JSON line."""
    parser = argparse.ArgumentParser(description="FedAvg on digits in plain torch.")
    parser.add_argument("--workload", choices=sorted(WORKLOADS), default="small")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    workload = WORKLOADS[args.workload]

    generator = np.random.default_rng(args.seed)
    torch.manual_seed(args.seed)
    client_x, client_y, test_x, test_y = load_client_data(workload, generator)
    if workload.model == "lenet5":
        model = lenet5()
    else:
        model = nn.Sequential(
            nn.Linear(client_x.shape[-1], workload.hidden),
            nn.ReLU(),
            nn.Linear(workload.hidden, 10),
        )
    # Built before the clock starts: its first construction imports torch._dynamo (~1 s).
    optimizer = torch.optim.SGD(model.parameters(), lr=workload.learning_rate)

    rounds_start = time.perf_counter()
    run_rounds(model, optimizer, client_x, client_y, workload, generator)
    rounds_s = time.perf_counter() - rounds_start

    with torch.inference_mode():
        accuracy = (model(test_x).argmax(dim=1) == test_y).float().mean().item()
    total_s = time.perf_counter() - _SCRIPT_START
    record = {
        "way": "bare",
        "workload": args.workload,
        "total_s": total_s,
        "rounds_s": rounds_s,
        "per_round_s": rounds_s / workload.rounds,
        "accuracy": accuracy,
    }
    print(json.dumps(record))


if __name__ == "__main__":
    main()
