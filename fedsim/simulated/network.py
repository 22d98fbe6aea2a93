"""The time model of a simulated network: compute speed, link latency and bandwidth.

A :class:`Network` turns work and messages into seconds.  Training takes
``seconds_per_unit`` per example (or per mini-batch step); a message from ``s`` to ``r``
takes the one-way latency of the link plus its size over the bandwidth it gets.  Latency
has a site part (nodes sit at sites, e.g. the 227 cities of the latency matrix in de Vos
et al., "MoDeST: Bridging the Gap between Federated and Decentralized Learning with
Decentralized Sampling", 2023) and a per-node access part.
The :func:`network` factory builds one from the settings of the ``network`` config group.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from fedsim import rng
from fedsim.errors import check
from fedsim.files import number_rows
from fedsim.simulated.frozen import freeze_fields

UNITS = ("sample", "step")
COMPUTE_MODES = ("constant", "lognormal", "file")
LATENCY_MODES = ("constant", "drawn", "file")
BYTES_PER_MEGABIT = 125_000.0
_COMPUTE_DRAW, _LATENCY_DRAW = 0, 1  # keep the two draws of one seed independent


@dataclass(frozen=True, eq=False)
class Network:
    """Compute speed per node, latency per link and bandwidth per node.

    Attributes
    ----------
    seconds_per_unit : (n,) compute seconds per unit of work of each node.
    unit : ``"sample"`` (work is the number of examples) or ``"step"`` (mini-batch steps).
    site_latency : (k, k) one-way seconds between sites; ``k = 1`` without sites.
    node_site : (n,) the site of each node.
    access_latency : (n,) seconds added at each end of a link.
    upload, download : (n,) bytes per second; ``np.inf`` means unlimited.
    """

    seconds_per_unit: np.ndarray
    unit: str
    site_latency: np.ndarray
    node_site: np.ndarray
    access_latency: np.ndarray
    upload: np.ndarray
    download: np.ndarray

    def __post_init__(self) -> None:
        freeze_fields(self, {
            "seconds_per_unit": np.float64, "site_latency": np.float64, "node_site": np.int64,
            "access_latency": np.float64, "upload": np.float64, "download": np.float64,
        })  # fmt: skip
        check(self.unit in UNITS, f"network.unit={self.unit} is not one of: {', '.join(UNITS)}")
        n, sites = len(self.seconds_per_unit), len(self.site_latency)
        check(
            self.site_latency.shape == (sites, sites) and sites >= 1,
            f"Network.site_latency has shape {self.site_latency.shape}; it must be square",
        )
        for name in ("node_site", "access_latency", "upload", "download"):
            shape = getattr(self, name).shape
            check(shape == (n,), f"Network.{name} has shape {shape}; expected ({n},)")
        check(
            bool(np.all((self.node_site >= 0) & (self.node_site < sites))),
            f"Network.node_site must lie in 0..{sites - 1}",
        )
        check(
            bool(np.all(self.upload > 0) and np.all(self.download > 0)),
            "Network.upload and Network.download must be > 0 bytes per second",
        )

    @property
    def num_nodes(self) -> int:
        """The number of nodes ``n``."""
        return len(self.seconds_per_unit)

    def compute_time(
        self, nodes: npt.ArrayLike, samples: npt.ArrayLike, steps: npt.ArrayLike
    ) -> np.ndarray:
        """Seconds each of ``nodes`` needs for ``samples`` examples in ``steps`` steps.

        ``samples`` and ``steps`` are aligned with ``nodes`` (or scalars); only the one
        matching :attr:`unit` is used.
        """
        work = np.asarray(samples if self.unit == "sample" else steps, dtype=np.float64)
        return self.seconds_per_unit[np.asarray(nodes, dtype=np.int64)] * work

    def latency(self, senders: npt.ArrayLike, receivers: npt.ArrayLike) -> np.ndarray:
        """One-way seconds from each sender to its receiver; exactly 0 from a node to itself."""
        senders = np.asarray(senders, dtype=np.int64)
        receivers = np.asarray(receivers, dtype=np.int64)
        seconds = (
            self.site_latency[self.node_site[senders], self.node_site[receivers]]
            + self.access_latency[senders]
            + self.access_latency[receivers]
        )
        return np.where(senders == receivers, 0.0, seconds)

    def transfer_times(
        self, senders: npt.ArrayLike, receivers: npt.ArrayLike, num_bytes: npt.ArrayLike
    ) -> np.ndarray:
        """Seconds each transfer of a batch that starts together takes.

        A sender's upload is split evenly over the transfers it sends in this batch and a
        receiver's download over those it receives; a transfer gets the smaller share.  A
        transfer from a node to itself takes 0 and takes no bandwidth.  ``num_bytes`` is a
        scalar or one size per transfer.
        """
        senders = np.asarray(senders, dtype=np.int64)
        receivers = np.asarray(receivers, dtype=np.int64)
        size = np.broadcast_to(np.asarray(num_bytes, dtype=np.float64), senders.shape)
        moving = senders != receivers
        sent = np.bincount(senders[moving], minlength=self.num_nodes)
        received = np.bincount(receivers[moving], minlength=self.num_nodes)
        rate = np.minimum(
            self.upload[senders] / np.maximum(sent[senders], 1),
            self.download[receivers] / np.maximum(received[receivers], 1),
        )
        return np.where(moving, self.latency(senders, receivers) + size / rate, 0.0)

    def round_trip(
        self, a: npt.ArrayLike, b: npt.ArrayLike, num_bytes: npt.ArrayLike
    ) -> np.ndarray:
        """Seconds for ``num_bytes`` from ``a`` to ``b`` and back (a ping and its pong).

        Each direction is a single transfer with the link to itself:
        ``latency + num_bytes / min(upload of the sender, download of the receiver)``.
        """
        a = np.asarray(a, dtype=np.int64)
        b = np.asarray(b, dtype=np.int64)
        size = np.asarray(num_bytes, dtype=np.float64)
        there = size / np.minimum(self.upload[a], self.download[b])
        back = size / np.minimum(self.upload[b], self.download[a])
        seconds = self.latency(a, b) + self.latency(b, a) + there + back
        return np.where(a == b, 0.0, seconds)


def network(
    num_nodes: int,
    seed: int,
    compute: str = "constant",
    seconds_per_unit: float = 0.001,
    unit: str = "sample",
    compute_sigma: float = 0.5,
    compute_file: str | None = None,
    latency: str = "constant",
    latency_s: float = 0.05,
    latency_file: str | None = None,
    upload_mbps: float = 100.0,
    download_mbps: float = 100.0,
) -> Network:
    """Build the :class:`Network` that the ``network`` settings describe.

    Parameters
    ----------
    compute : ``"constant"`` (every node ``seconds_per_unit``), ``"lognormal"``
        (``seconds_per_unit * exp(N(0, compute_sigma))`` per node, median ``seconds_per_unit``)
        or ``"file"`` (``compute_file``: one number per line; node i gets line i mod count).
    unit : ``"sample"`` or ``"step"``: what ``seconds_per_unit`` is per.
    latency : ``"constant"`` (every link ``latency_s``), ``"drawn"`` (access latency
        ``a_i ~ U(0, latency_s)`` per node, link latency ``a_i + a_j``) or ``"file"``
        (``latency_file``: a k x k matrix in milliseconds; node i sits at site i mod k).
    upload_mbps, download_mbps : megabits per second per node; ``inf`` for unlimited.
    """
    check(
        compute in COMPUTE_MODES,
        f"network.compute={compute} is not one of: {', '.join(COMPUTE_MODES)}",
    )
    check(
        latency in LATENCY_MODES,
        f"network.latency={latency} is not one of: {', '.join(LATENCY_MODES)}",
    )
    check(unit in UNITS, f"network.unit={unit} is not one of: {', '.join(UNITS)}")
    _check_mode_file("compute", compute, compute_file)
    _check_mode_file("latency", latency, latency_file)
    _require(
        lambda value: 0 <= value < np.inf,
        "a finite number >= 0",
        seconds_per_unit=seconds_per_unit,
        compute_sigma=compute_sigma,
        latency_s=latency_s,
    )
    _require(
        lambda rate: rate > 0,
        "> 0 (inf for unlimited)",
        upload_mbps=upload_mbps,
        download_mbps=download_mbps,
    )
    per_unit = _compute_speeds(
        num_nodes, seed, compute, seconds_per_unit, compute_sigma, compute_file
    )
    site_latency, node_site, access = _latencies(num_nodes, seed, latency, latency_s, latency_file)
    return Network(
        seconds_per_unit=per_unit,
        unit=unit,
        site_latency=site_latency,
        node_site=node_site,
        access_latency=access,
        upload=np.full(num_nodes, upload_mbps * BYTES_PER_MEGABIT),
        download=np.full(num_nodes, download_mbps * BYTES_PER_MEGABIT),
    )


def _require(holds: Callable[[float], bool], legal: str, **settings: float) -> None:
    """Raise a :class:`ConfigError` for the first of ``settings`` that ``holds`` rejects."""
    for name, value in settings.items():
        check(holds(value), f"network.{name}={value} must be {legal}")


def _check_mode_file(name: str, mode: str, path: str | None) -> None:
    """A file is needed exactly when the mode is ``"file"``."""
    check(
        mode != "file" or path is not None,
        f"network.{name}=file needs network.{name}_file=PATH",
    )
    check(
        mode == "file" or path is None,
        f"network.{name}_file={path} is only read with network.{name}=file (not {mode})",
    )


def _compute_speeds(
    num_nodes: int, seed: int, mode: str, per_unit: float, sigma: float, path: str | None
) -> np.ndarray:
    """Compute seconds per unit of work of every node."""
    if mode == "lognormal":
        draw = rng.generator(seed, rng.NETWORK, _COMPUTE_DRAW)
        return per_unit * np.exp(draw.normal(0.0, sigma, size=num_nodes))
    if mode == "file":
        rows = _read_rows("compute_file", str(path))
        check(
            all(len(row) == 1 for row in rows),
            f"network.compute_file={path} must hold one number per line",
        )
        values = np.concatenate(rows)
        return values[np.arange(num_nodes) % len(values)]
    return np.full(num_nodes, per_unit)


def _latencies(
    num_nodes: int, seed: int, mode: str, latency_s: float, path: str | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The site latency matrix, the site of each node and the access latency of each node."""
    no_access, one_site = np.zeros(num_nodes), np.zeros(num_nodes, dtype=np.int64)
    if mode == "drawn":
        draw = rng.generator(seed, rng.NETWORK, _LATENCY_DRAW)
        return np.zeros((1, 1)), one_site, draw.uniform(0.0, latency_s, size=num_nodes)
    if mode == "file":
        rows = _read_rows("latency_file", str(path))
        sites = len(rows)
        check(
            all(len(row) == sites for row in rows),
            f"network.latency_file={path} must be a square matrix, but it has {sites} rows "
            f"of lengths {sorted({len(row) for row in rows})}",
        )
        return np.stack(rows) / 1000.0, np.arange(num_nodes) % sites, no_access
    return np.full((1, 1), latency_s), one_site, no_access


def _read_rows(setting: str, path: str) -> list[np.ndarray]:
    """The numbers of each non-blank, non-``#`` line of a file; finite and >= 0."""
    source = Path(path)
    check(source.is_file(), f"network.{setting}={path} does not exist")
    rows = number_rows(f"network.{setting}={path}", source)
    for line_number, line, numbers in rows:
        check(
            bool(np.all(np.isfinite(numbers) & (numbers >= 0))),
            f"network.{setting}={path} line {line_number}: {line[:40]!r} "
            "must hold finite numbers >= 0",
        )
    return [numbers for _, _, numbers in rows]
