"""Device profiles in FedScale's fields: each client's compute speed and bandwidth from a CSV.

FedScale (Lai et al., "FedScale: Benchmarking Model and System Performance of Federated
Learning at Scale", ICML 2022; ``fedscale/cloud/internal/client_metadata.py``) gives a client
a ``computation`` speed in milliseconds per sample and a ``communication`` bandwidth in kbit/s,
and times a task as ``3 * batch_size * local_steps * computation / 1000`` seconds of compute
(forward and about twice that backward) plus ``(upload + download) / communication`` of
transfer.  Here a node trains at ``augmentation * computation / 1000`` seconds per sample and
sends and receives at ``communication`` kbit/s, so fedsim's clock times a round exactly so.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from fedsim.errors import check
from fedsim.files import reading
from fedsim.simulated.network import Network

COLUMNS = ("computation", "communication")
BYTES_PER_KILOBIT = 125.0


def device_profiles(
    num_nodes: int, seed: int, path: str, augmentation: float = 3.0, latency_s: float = 0.0
) -> Network:
    """The network of a profile file: a CSV with the header ``computation,communication``
    (milliseconds per sample, kbit/s), optionally led by a ``node`` column naming the node
    each row profiles; without it node i takes row i mod the number of rows (FedScale maps
    clients to profiles by id likewise).  ``augmentation`` is FedScale's factor of backward to
    forward work plus one (3); ``latency_s`` adds a one-way latency to every transfer (FedScale
    has none).  ``seed`` is unused: the file says everything."""
    check(augmentation > 0, f"network.augmentation={augmentation} must be > 0")
    check(0 <= latency_s < np.inf, f"network.latency_s={latency_s} must be a finite number >= 0")
    computation, communication = _read_profiles(num_nodes, path)
    kilobits = communication * BYTES_PER_KILOBIT
    return Network(
        seconds_per_unit=augmentation * computation / 1000.0,
        unit="sample",
        site_latency=np.full((1, 1), latency_s),
        node_site=np.zeros(num_nodes, dtype=np.int64),
        access_latency=np.zeros(num_nodes),
        upload=kilobits,
        download=kilobits,
    )


def _read_profiles(num_nodes: int, path: str) -> tuple[np.ndarray, np.ndarray]:
    """Each node's (computation, communication), as the file assigns them."""
    check(
        path is not None,
        "network=device_profiles needs network.path=PATH (a CSV file computation,communication)",
    )
    source = Path(path)
    check(source.is_file(), f"network.path={path} does not exist")
    with (
        reading(f"network.path={path}", "a CSV file computation,communication"),
        source.open(newline="", encoding="utf-8") as handle,
    ):
        rows = [row for row in csv.reader(handle) if any(cell.strip() for cell in row)]
    header = tuple(cell.strip() for cell in rows[0]) if rows else ()
    by_node = header[:1] == ("node",)
    check(
        header[by_node:] == COLUMNS,
        f"network.path={path} must start with the header computation,communication (or "
        f"node,computation,communication), not {','.join(header)}",
    )
    check(len(rows) > 1, f"network.path={path} lists no device")
    values = np.empty((len(rows) - 1, len(header)))
    for index, row in enumerate(rows[1:]):
        where = f"network.path={path} line {index + 2}"
        check(len(row) == len(header), f"{where}: expected {len(header)} cells, got {len(row)}")
        for column, cell in enumerate(row):
            try:
                value = float(cell)
            except ValueError:
                value = np.nan
            is_node = by_node and column == 0
            check(
                np.isfinite(value) and (value >= 0 if is_node else value > 0),
                f"{where}: {header[column]}={cell.strip()!r} must be a finite number "
                f"{'>= 0' if is_node else '> 0'}",
            )
            values[index, column] = value
    if not by_node:
        assigned = values[np.arange(num_nodes) % len(values)]
        return assigned[:, 0], assigned[:, 1]
    nodes = values[:, 0]
    check(
        bool(np.all(nodes == np.round(nodes))) and len(set(nodes)) == len(nodes),
        f"network.path={path}: the node column must hold distinct integer ids",
    )
    missing = sorted(set(range(num_nodes)) - set(nodes.astype(np.int64).tolist()))
    check(
        not missing,
        f"network.path={path} profiles no device for nodes {missing[:5]}"
        f"{' ...' if len(missing) > 5 else ''} of 0..{num_nodes - 1}",
    )
    order = np.argsort(nodes)
    kept = order[nodes[order] < num_nodes]
    return values[kept, 1], values[kept, 2]
